// The desktop notifications the service worker (sw.js) shows on this device: closing the ones
// that were read or deleted anywhere (the stream's read-state events reach every tab, each tag
// is a notification id), and what a click on one asks of the page: mark it read, then follow
// its url when it stays on this origin. The worker holds no token, so the page does the marking.

import { state, session } from './state.js';
import { markReadByID } from './actions.js';

export const APP_SCOPE = '/app/';
const CLICK_MESSAGE = 'mercurio:notification-click';

async function shownNotifications(filter = {}) {
  if (!('serviceWorker' in navigator)) return [];
  const reg = await navigator.serviceWorker.getRegistration(APP_SCOPE);
  return reg && typeof reg.getNotifications === 'function' ? reg.getNotifications(filter) : [];
}

function closeWhere(filter, keep) {
  shownNotifications(filter)
    .then((shown) => { for (const n of shown) if (keep(n.data || {})) n.close(); })
    .catch((err) => console.warn('mercurio: could not close desktop notifications', err && err.message));
}

/** A read-state event: close the desktop notifications it made stale. */
export function closeReadNotifications(d) {
  if (!d || (d.status !== 'read' && d.status !== 'deleted')) return;
  if (d.notificationID != null) {
    closeWhere({ tag: String(d.notificationID) }, () => true);
    return;
  }
  // "all read" (of one category, or of every one): this user's, not another user's on this device
  closeWhere({}, (meta) => meta.clientID === state.user && (!d.category || meta.category === d.category));
}

/** After the first load: close what was read while no tab of this user was open. */
export function closeAlreadyRead() {
  closeWhere({}, (meta) => {
    const n = state.items.get(meta.notificationID);
    return meta.clientID === state.user && !!n && !!n.readAt;
  });
}

/** The url to go on to, if it is on this origin (a publisher's url may point anywhere). */
function sameOrigin(url) {
  if (typeof url !== 'string' || !url) return null;
  try {
    const u = new URL(url, location.href);
    return u.origin === location.origin ? u.href : null;
  } catch {
    return null;
  }
}

function follow(url) {
  const next = sameOrigin(url);
  if (next && next !== location.href) location.assign(next);
}

/** What the worker opens when no app tab is there (sw.js builds the same URL). */
function landingURL(notificationID, clientID, url) {
  const q = new URLSearchParams();
  if (notificationID != null) q.set('read', String(notificationID));
  if (clientID != null) q.set('client', clientID);
  if (url) q.set('next', url);
  return `${APP_SCOPE}?${q}`;
}

async function onClick({ notificationID, clientID, url }) {
  if (!session.api || clientID !== state.user) {
    // this tab shows nobody's or another user's inbox: open the one the notification is for
    location.assign(landingURL(notificationID, clientID, url));
    return;
  }
  if (Number.isInteger(notificationID)) await markReadByID(notificationID);
  follow(url);
}

/** Listen for the worker's click messages (any app tab may be the one it picks). */
export function wireDesktopNotifications() {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker.addEventListener('message', (e) => {
    const m = e.data;
    if (m && m.type === CLICK_MESSAGE) onClick(m);
  });
  navigator.serviceWorker.startMessages();
}

/**
 * The page was opened by a click on a desktop notification (?read=<id>&client=<c>&next=<url>):
 * mark it read if it is the signed-in user's, then go on to next. The parameters are for this
 * load only: they leave the address bar first, so a reload marks nothing again.
 */
export async function handleLanding() {
  const q = new URLSearchParams(location.search);
  if (!q.has('read')) return;
  const id = Number(q.get('read'));
  const client = q.get('client');
  const next = q.get('next');
  for (const name of ['read', 'client', 'next']) q.delete(name);
  if (client === state.user && !q.has('user')) q.set('user', client);
  const rest = String(q);
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
  if (client !== state.user) return;
  if (Number.isInteger(id) && id > 0) await markReadByID(id);
  follow(next);
}
