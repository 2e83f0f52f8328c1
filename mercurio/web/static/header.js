// The top bar: the connection indicator, and the unread badge on the bell (with the page title)
// kept in step with the server's unread count.

import { ui } from './dom.js';
import { state, session } from './state.js';

const CONN_TEXT = {
  live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline', error: 'Error',
  limit: 'Stream limit reached',
};
const CONN_TITLE = {
  live: 'Receiving notifications live', offline: 'Not connected', error: 'The server answered with an error',
  limit: 'This user has as many live streams open as the server allows',
};

let wasLive = false;
let resync = null;

/** What to run when the stream is live again after a break (the app's resynchronisation). */
export function onBackLive(fn) {
  resync = fn;
}

export function setConn(s) {
  if (s === 'live' && state.conn !== 'live') {
    // Back after a break: missed notifications are replayed by the stream, but read states
    // changed elsewhere meanwhile are not, so resynchronise the list and the count.
    if (wasLive && session.api && resync) resync();
    wasLive = true;
  }
  state.conn = s;
  ui.conn.dataset.state = s;
  ui.connText.textContent = CONN_TEXT[s] || s;
  ui.conn.title = CONN_TITLE[s] || 'Trying to reach the server';
}

export function setUnread(n) {
  n = Math.max(0, Number(n) || 0);
  state.unread = n;
  ui.badge.textContent = n > 99 ? '99+' : String(n);
  ui.badge.dataset.count = String(n);
  ui.badge.hidden = n === 0;
  const label = n === 0 ? 'No unread notifications' : `${n} unread notification${n === 1 ? '' : 's'}`;
  ui.badge.setAttribute('aria-label', label);
  ui.bell.setAttribute('aria-label', `Notifications: ${label.toLowerCase()}`);
  ui.markAll.disabled = n === 0;
  document.title = `${n ? `(${n > 99 ? '99+' : n}) ` : ''}Mercurio${state.user ? ` · ${state.user}` : ''}`;
}

let countTimer = null;
let countSeq = 0;

export function scheduleCountRefresh(delay = 250) {
  clearTimeout(countTimer);
  countTimer = setTimeout(loadCount, delay);
}

export async function loadCount() {
  const seq = ++countSeq;
  const version = state.countVersion;
  try {
    const count = await session.api.unreadCount();
    // a newer request, or a newer authoritative count (read-state event, local change) wins
    if (seq === countSeq && version === state.countVersion) setUnread(count);
  } catch (err) {
    console.warn('mercurio: unread count failed', err.message);
  }
}
