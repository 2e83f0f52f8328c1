// The notification list: one <li> per notification shown (from index.html's #item-template),
// kept in newest-first order with the model, plus the empty state and "Load older".

import { $, ui } from './dom.js';
import { state } from './state.js';
import { describe, hue, relativeTime } from './format.js';

const nodes = new Map();   // notificationID -> <li>

function renderItem(n) {
  let li = nodes.get(n.notificationID);
  if (!li) {
    li = ui.template.content.firstElementChild.cloneNode(true);
    li.dataset.id = String(n.notificationID);
    nodes.set(n.notificationID, li);
    const menuBtn = $('.menu-btn', li);
    const menu = $('.menu', li);
    menu.id = `menu-${n.notificationID}`;
    menuBtn.setAttribute('aria-controls', menu.id);
    const textEl = $('.item-text', li);
    textEl.id = `text-${n.notificationID}`;
    $('.show-more', li).setAttribute('aria-controls', textEl.id);
  }
  const unread = !n.readAt;
  li.classList.toggle('unread', unread);
  li.dataset.category = n.category;
  li.dataset.read = unread ? 'false' : 'true';
  const { title, text } = describe(n.data);
  const chip = $('.chip', li);
  chip.textContent = n.category;
  chip.title = n.category; // the whole name, when a long one is cut
  chip.style.setProperty('--hue', hue(n.category));
  $('.item-source', li).textContent = n.sourceID ? `from ${n.sourceID}` : '';
  const time = $('.item-time', li);
  time.dateTime = n.createdAt || '';
  time.textContent = relativeTime(n.createdAt);
  if (n.createdAt) time.title = new Date(n.createdAt).toLocaleString();
  const titleEl = $('.item-title', li);
  titleEl.textContent = title;
  titleEl.hidden = !title;
  const textEl = $('.item-text', li);
  if (textEl.textContent !== text) textEl.textContent = text;
  const main = $('.item-main', li);
  main.setAttribute('aria-label', `${unread ? 'Unread. ' : ''}${title ? `${title}. ` : ''}${text}. ${n.category}, from ${n.sourceID || 'unknown'}, ${relativeTime(n.createdAt)}`);
  $('.menu-btn', li).setAttribute('aria-label', `Actions for notification ${n.notificationID}`);
  $('.menu-item[data-action="toggle"]', li).textContent = unread ? 'Mark as read' : 'Mark as unread';
  return li;
}

/** Stand-in for an item renderItem() choked on: one bad item never hides the others. */
function renderFallback(n, err) {
  console.warn('mercurio: could not render notification', n.notificationID, err && err.message);
  let li = nodes.get(n.notificationID);
  if (!li) {
    li = ui.template.content.firstElementChild.cloneNode(true);
    li.dataset.id = String(n.notificationID);
    nodes.set(n.notificationID, li);
  }
  $('.item-title', li).hidden = true;
  $('.item-text', li).textContent = `Notification ${n.notificationID} could not be shown.`;
  return li;
}

function renderSafely(n) {
  try {
    return renderItem(n);
  } catch (err) {
    return renderFallback(n, err);
  }
}

/** Bring the <ol> in line with state.items: drop, add, update and reorder items in place. */
export function syncList() {
  const ordered = [...state.items.values()].sort((a, b) => b.notificationID - a.notificationID);
  const keep = new Set(ordered.map((n) => n.notificationID));
  for (const [id, li] of nodes) {
    if (!keep.has(id)) {
      if (li.contains(document.activeElement)) ui.inboxHeading.focus();
      li.remove();
      nodes.delete(id);
    }
  }
  let cursor = ui.list.firstElementChild;
  for (const n of ordered) {
    const li = renderSafely(n);
    if (li !== cursor) ui.list.insertBefore(li, cursor);
    else cursor = cursor.nextElementSibling;
  }
  const empty = ordered.length === 0 && state.ready;
  ui.empty.hidden = !empty;
  if (empty) {
    ui.emptyText.textContent = state.filter.status === 'unread'
      ? 'No unread notifications.'
      : state.filter.category ? `Nothing in “${state.filter.category}” yet.` : 'You’re all caught up. New notifications appear here live.';
  }
  ui.loadMore.hidden = state.nextBefore == null;
  updateClamps();
}

/** "Show more" under each message the clamp cuts (CSS: four lines), none under the others. */
export function updateClamps() {
  const lis = [...nodes.values()];
  // every measure first, then every change: one layout, however long the list
  const cut = lis.map((li) => {
    const text = $('.item-text', li);
    return li.classList.contains('expanded') || text.scrollHeight > text.clientHeight + 1;
  });
  lis.forEach((li, i) => { $('.show-more', li).hidden = !cut[i]; });
}

/** The "Show more" / "Show less" button of an item. */
export function toggleMore(li) {
  const expanded = li.classList.toggle('expanded');
  const btn = $('.show-more', li);
  btn.setAttribute('aria-expanded', String(expanded));
  btn.textContent = expanded ? 'Show less' : 'Show more';
  btn.hidden = false;
}

let clampFrame = 0;
window.addEventListener('resize', () => {
  cancelAnimationFrame(clampFrame);
  clampFrame = requestAnimationFrame(updateClamps);
});

/** Highlight a notification that just arrived live, for a moment. */
export function flashNew(id) {
  const li = nodes.get(id);
  if (li) {
    li.classList.add('is-new');
    setTimeout(() => li.classList.remove('is-new'), 2500);
  }
}

export function refreshTimes() {
  for (const time of ui.list.querySelectorAll('time[datetime]')) {
    if (time.dateTime) time.textContent = relativeTime(time.dateTime);
  }
}
