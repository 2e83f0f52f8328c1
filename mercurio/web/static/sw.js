// Mercurio's service worker (registered by push.js with scope /app/): shows each Web Push
// message as a desktop notification and, when the user clicks one, brings the app forward.
//
// The push payload, decrypted by the browser (the server's contract):
//   {"notificationID": int, "clientID": str, "category": str, "data": <publisher JSON>,
//    "createdAt": str}, or with "truncated": true and no "data" when the data was too large.
// A publisher's data may follow the convention {"title", "body", "url"} or be a plain string;
// anything else is shown as a short JSON text.
//
// The worker holds no token: marking a notification read on click is the page's job. It posts
// {type: "mercurio:notification-click", notificationID, clientID, url} to an open app tab, or
// opens /app/?read=<id>&client=<clientID>&next=<url> when there is none (see push.js).
// A classic script, not a module: module service workers are not in every browser yet.

const MAX_TITLE = 120;
const MAX_BODY = 300;
const CLICK_MESSAGE = 'mercurio:notification-click';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  // A push subscription is userVisibleOnly: every push must show a notification, even one
  // whose payload is missing or unreadable, or the browser shows its own generic one.
  event.waitUntil(self.registration.showNotification(...presentation(readPayload(event))));
});

self.addEventListener('notificationclick', (event) => event.waitUntil(onNotificationClick(event.notification)));

function readPayload(event) {
  try {
    const payload = event.data ? event.data.json() : null;
    return payload && typeof payload === 'object' && !Array.isArray(payload) ? payload : {};
  } catch {
    return {};
  }
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function shortJSON(value) {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    return '';
  }
}

const ownString = (data, name) => (Object.hasOwn(data, name) && typeof data[name] === 'string' ? data[name] : '');

/** The url a publisher attached, kept only when it stays on this origin. */
function sameOriginURL(url) {
  if (typeof url !== 'string' || !url) return null;
  try {
    const parsed = new URL(url, self.location.origin);
    return parsed.origin === self.location.origin ? parsed.href : null;
  } catch {
    return null;
  }
}

/** [title, options] for showNotification(). */
function presentation(payload) {
  const id = Number.isInteger(payload.notificationID) ? payload.notificationID : null;
  const category = typeof payload.category === 'string' ? payload.category : '';
  const data = payload.data;
  const convention = data && typeof data === 'object' && !Array.isArray(data);
  let title = convention ? ownString(data, 'title') : '';
  if (!title) title = category && category !== 'general' ? `New ${category} notification` : 'New notification';
  let body;
  if (payload.truncated === true || !Object.hasOwn(payload, 'data')) body = 'Open Mercurio to read it';
  else if (typeof data === 'string') body = data;
  else if (convention && (ownString(data, 'title') || ownString(data, 'body'))) body = ownString(data, 'body');
  else body = shortJSON(data);
  const options = {
    body: clip(body, MAX_BODY),
    data: {
      notificationID: id,
      clientID: typeof payload.clientID === 'string' ? payload.clientID : null,
      category,
      url: convention ? sameOriginURL(data.url) : null,
    },
  };
  // The tag is the notification id: a page that sees it read (read-state) closes it by tag,
  // and a push delivered twice replaces the first instead of stacking.
  if (id !== null) options.tag = String(id);
  const createdAt = Date.parse(payload.createdAt);
  if (!Number.isNaN(createdAt)) options.timestamp = createdAt;
  return [clip(title, MAX_TITLE), options];
}

/** The app's open tab for this user, if any: one showing this user's inbox, else any. */
function pickWindow(windows, clientID) {
  const scope = new URL(self.registration.scope);
  const inApp = windows.filter((w) => new URL(w.url).pathname.startsWith(scope.pathname));
  const ofUser = (w) => {
    const q = new URL(w.url).searchParams;
    return clientID !== null && (q.get('user') === clientID || q.get('client') === clientID);
  };
  return inApp.find(ofUser) || inApp.find((w) => w.focused) || inApp[0] || null;
}

/** Close the clicked notification and hand it to the app (a function of its own so that a
 * test can drive it: a notificationclick event made by script cannot waitUntil()). */
function onNotificationClick(notification) {
  notification.close();
  return bringAppForward(notification.data || {});
}

async function bringAppForward({ notificationID = null, clientID = null, url = null }) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const win = pickWindow(windows, clientID);
  if (win) {
    try {
      await win.focus();
    } catch {
      // focusing is a courtesy (some browsers refuse it); the page still gets the message
    }
    win.postMessage({ type: CLICK_MESSAGE, notificationID, clientID, url });
    return;
  }
  const q = new URLSearchParams();
  if (notificationID !== null) q.set('read', String(notificationID));
  if (clientID !== null) q.set('client', clientID);
  if (url) q.set('next', url);
  await self.clients.openWindow(`${new URL(self.registration.scope).pathname}?${q}`);
}
