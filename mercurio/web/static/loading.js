// Loading the inbox from the server: a page of the list (a reload, or "Load older"), the stream
// cursor, a resynchronisation, and the first load, retried with backoff until it works.

import { ui } from './dom.js';
import { state, session, normalize, bumpCursor, matchesFilter } from './state.js';
import { backoffDelay } from '/sdk/stream.js';
import { showError, waitOrRetry } from './banner.js';
import { setConn, loadCount } from './header.js';
import { syncList } from './list.js';
import { addCategories } from './categories.js';
import { loadPrefs } from './prefs.js';
import { loadTopics } from './topics.js';

export async function loadList({ append = false } = {}) {
  const loading = { arrived: [] };
  if (!append) state.loading = loading;
  ui.list.setAttribute('aria-busy', 'true');
  try {
    const res = await session.api.list({
      status: state.filter.status,
      category: state.filter.category || undefined,
      before: append ? state.nextBefore : undefined,
    });
    if (!append && state.loading !== loading) return; // superseded by a newer reload
    if (!append) state.items = new Map();
    for (const raw of res.notifications || []) {
      const n = normalize(raw);
      state.seen.add(n.notificationID);
      state.items.set(n.notificationID, n);
    }
    // notifications pushed while the list was loading are kept even if the list missed them
    for (const n of loading.arrived) if (matchesFilter(n)) state.items.set(n.notificationID, n);
    state.nextBefore = res.nextBefore ?? null;
    addCategories((res.notifications || []).map((n) => n.category));
    showError('');
    state.ready = true;
    syncList();
  } catch (err) {
    showError(`Could not load notifications: ${err.message}`);
    throw err;
  } finally {
    if (state.loading === loading) state.loading = null;
    ui.list.setAttribute('aria-busy', 'false');
  }
}

async function loadHead() {
  // The stream cursor: the newest notification of this user, whatever the filter.
  if (state.filter.category || state.filter.status !== 'all') {
    const res = await session.api.list({ status: 'all', limit: 1 });
    for (const n of res.notifications || []) bumpCursor(Number(n.notificationID));
  } else {
    for (const id of state.items.keys()) bumpCursor(id);
  }
  if (state.lastEventId == null) state.lastEventId = 0;
}

/** Reload the list and the count (after a break, or when the server says "reset"). */
export async function resync() {
  try {
    await Promise.all([loadList(), loadCount()]);
  } catch { /* shown in the banner */ }
}

/** The first load gives the stream its cursor: retry it, backing off, until it works. */
export async function loadUntilItWorks() {
  for (let attempt = 0; ; attempt++) {
    try {
      await Promise.all([loadList(), loadCount(), loadPrefs(), loadTopics()]);
      await loadHead();
      return;
    } catch (err) {
      const delay = backoffDelay(attempt);
      reportLoadFailure(err, delay);
      await waitOrRetry(delay);
    }
  }
}

function reportLoadFailure(err, delay) {
  if (navigator.onLine === false || (err && err.network)) {
    // the server is away (restart, network): the stream-like "Reconnecting…" is the truth
    setConn(navigator.onLine === false ? 'offline' : 'reconnecting');
    return;
  }
  // the server answered with an error (or the app broke): say so, instead of "Reconnecting…"
  setConn('error');
  const reason = err && typeof err.message === 'string' ? err.message : 'unknown error';
  showError(`Could not load notifications: ${reason}. Retrying in ${Math.ceil(delay / 1000)} s.`, { retry: true });
}
