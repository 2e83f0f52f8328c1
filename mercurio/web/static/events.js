// What the stream says, applied to the inbox: a new notification, a read-state change made
// elsewhere, or "reset". Events come from this tab's stream when it leads, or relayed by the
// leader tab otherwise (the SDK's shared.js; see streaming.js).

import { state, normalize, bumpCursor, matchesFilter } from './state.js';
import { describe } from './format.js';
import { announce } from './banner.js';
import { setUnread, scheduleCountRefresh } from './header.js';
import { syncList, flashNew } from './list.js';
import { addCategories } from './categories.js';
import { resync } from './loading.js';
import { closeReadNotifications } from './desktop.js';

export function handleStreamEvent(type, data) {
  // one odd event must neither stop the stream nor keep it from the other tabs
  try {
    if (type === 'message') onNotification(data);
    else if (type === 'read-state') onReadState(data);
    else if (type === 'reset') resync();
    // 'token-expired' is handled by the stream itself (new token, resume with lastEventId)
  } catch (err) {
    console.warn('mercurio: could not handle a stream event', type, err && err.message);
  }
}

function onNotification(raw) {
  if (!raw || raw.notificationID == null) return;
  const n = normalize(raw);
  const id = n.notificationID;
  bumpCursor(id);
  if (state.seen.has(id)) return; // never show a duplicate
  state.seen.add(id);
  if (state.loading) state.loading.arrived.push(n);
  addCategories([n.category]);
  if (matchesFilter(n)) {
    state.items.set(id, n);
    syncList();
    flashNew(id);
  }
  state.countVersion++;
  setUnread(state.unread + 1);
  scheduleCountRefresh();
  const { title, text } = describe(n.data);
  announce(`New notification from ${n.sourceID}: ${title || text}`);
}

function onReadState(d) {
  if (!d) return;
  const now = new Date().toISOString();
  if (d.notificationID == null) {
    for (const n of state.items.values()) {
      if (!d.category || n.category === d.category) {
        if (d.status === 'read' && !n.readAt) n.readAt = now;
        else if (d.status === 'unread') n.readAt = null;
      }
    }
  } else {
    const id = Number(d.notificationID);
    const n = state.items.get(id);
    if (d.status === 'deleted') state.items.delete(id);
    if (d.status === 'deleted' && n && !n.readAt && typeof d.unreadCount !== 'number') {
      state.countVersion++;
      setUnread(Math.max(0, state.unread - 1)); // a shared row: the count is ours to keep
    }
    else if (n && d.status === 'read' && !n.readAt) n.readAt = now;
    else if (n && d.status === 'unread') n.readAt = null;
  }
  if (typeof d.unreadCount === 'number') {
    state.countVersion++;
    setUnread(d.unreadCount);
  }
  syncList();
  closeReadNotifications(d);
}
