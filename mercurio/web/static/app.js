// Mercurio notification centre — the browser app served at /app/.
//
// Who am I? (first match wins)
//   1. window.MERCURIO_TOKEN — set by an embedding page before this module loads — or a
//      `#token=<jwt>` URL fragment (removed from the address bar once read). The user id is the
//      token's `user_id` (or `sub`) claim. To let the app renew an expiring token, the embedder
//      may also set `window.MERCURIO_TOKEN_PROVIDER = async () => "<new jwt>"`.
//   2. `?user=<id>` — development flow: the token comes from POST /api/dev/token (only served
//      when MERCURIO_ENV is development or test) and is renewed the same way.
//   3. Neither: the page asks which user to open (123, 456 or any id) and navigates to ?user=.
//
// Other query parameters:
//   ?transport=fetch   read the stream with fetch() + Authorization header instead of the
//                      default native EventSource + single-use stream ticket.
//   ?view=inbox|publisher   show only one of the two panels.
//
// Tabs of the same user share one stream (see tabs.js); state for tests and debugging is
// exposed read-only as window.__mercurio.

import { Auth, ClientApi, devToken } from './api.js';
import { StreamConnection, backoffDelay } from './stream.js';
import { TabCoordinator } from './tabs.js';
import { initPublisher } from './publisher.js';

const $ = (sel, root = document) => root.querySelector(sel);
const params = new URLSearchParams(location.search);
const transport = params.get('transport') === 'fetch' ? 'fetch' : 'eventsource';
const view = params.get('view');
const SLUG = /^[a-z0-9_-]{1,32}$/;

const ui = {
  conn: $('#conn'),
  connText: $('#conn .conn-text'),
  bell: $('#bell'),
  badge: $('#unread-badge'),
  userForm: $('#user-form'),
  userInput: $('#user-input'),
  inbox: $('#inbox'),
  inboxHeading: $('#inbox-heading'),
  inboxSub: $('#inbox-sub'),
  markAll: $('#mark-all-read'),
  statusButtons: [...document.querySelectorAll('.seg[data-status]')],
  categoryFilter: $('#category-filter'),
  muteMenu: $('#mute-menu'),
  muteList: $('#mute-list'),
  muteAdd: $('#mute-add'),
  muteAddInput: $('#mute-add-input'),
  muteError: $('#mute-error'),
  mutedCount: $('#muted-count'),
  error: $('#inbox-error'),
  list: $('#list'),
  empty: $('#empty'),
  emptyText: $('#empty-text'),
  loadMore: $('#load-more'),
  announcer: $('#announcer'),
  template: $('#item-template'),
  publisher: $('#publisher'),
};

const state = {
  user: null,
  items: new Map(),        // notificationID -> notification shown with the current filter
  seen: new Set(),         // every notificationID ever received or listed: dedupe
  lastEventId: null,       // highest notification id seen (the stream cursor)
  unread: 0,
  countVersion: 0,
  filter: { status: 'all', category: '' },
  nextBefore: null,
  categories: new Set(['general']),
  muted: new Set(),
  conn: 'offline',
  isLeader: false,
  loading: null,           // {arrived: []} while the list is being (re)loaded
  ready: false,
};

let api = null;
let stream = null;
let coordinator = null;
const nodes = new Map();   // notificationID -> <li>

// ---------------------------------------------------------------------------------------------
// helpers

function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(part.padEnd(Math.ceil(part.length / 4) * 4, '='));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
}

function resolveIdentity() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  let token = typeof window.MERCURIO_TOKEN === 'string' && window.MERCURIO_TOKEN ? window.MERCURIO_TOKEN : null;
  if (!token && fragment.get('token')) {
    token = fragment.get('token');
    history.replaceState(null, '', location.pathname + location.search);
  }
  if (token) {
    const claims = jwtClaims(token);
    const user = window.MERCURIO_USER || claims.user_id || claims.sub;
    if (!user) return { error: 'The token has no user_id claim.' };
    const provider = typeof window.MERCURIO_TOKEN_PROVIDER === 'function' ? () => window.MERCURIO_TOKEN_PROVIDER() : null;
    return { user: String(user), token, renew: provider };
  }
  const user = (params.get('user') || '').trim();
  if (user) return { user, token: null, renew: () => devToken(user, false) };
  return null;
}

export function relativeTime(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  if (d === 1) return 'yesterday';
  if (d < 7) return `${d} days ago`;
  const date = new Date(t);
  const sameYear = date.getFullYear() === new Date(now).getFullYear();
  return date.toLocaleDateString(undefined, { month: 'short', day: 'numeric', ...(sameYear ? {} : { year: 'numeric' }) });
}

// A notification's data is whatever JSON a publisher sent, so turning it into text must never
// throw: String() of {"toString": 1} (or of an array holding one) does, JSON.stringify does not.
const MAX_TEXT = 5000; // a huge payload would only slow the page and the screen reader down

function clip(text) {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
}

export function safeText(value) {
  if (value == null) return '';
  if (typeof value === 'string') return clip(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  try {
    return clip(JSON.stringify(value) ?? '');
  } catch {
    return '[data that cannot be shown]';
  }
}

/** The first of `names` the object has as its own non-null property (never an inherited one). */
function field(data, names) {
  for (const name of names) if (Object.hasOwn(data, name) && data[name] != null) return data[name];
  return undefined;
}

export function describe(data) {
  if (typeof data === 'string') return { title: '', text: clip(data) };
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    const title = field(data, ['title', 'subject', 'heading']);
    const text = field(data, ['body', 'message', 'text', 'description']);
    if (title !== undefined || text !== undefined) return { title: safeText(title), text: safeText(text) };
  }
  return { title: '', text: data === null ? 'null' : safeText(data) };
}

function hue(category) {
  let h = 0;
  for (const ch of category) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return [220, 262, 190, 160, 330, 25, 45, 290, 200][h % 9];
}

function announce(text) {
  ui.announcer.textContent = '';
  // a new text node makes screen readers speak even when the same text repeats
  requestAnimationFrame(() => { ui.announcer.textContent = text; });
}

let retryNow = null; // set while the boot loop waits: skips the rest of the wait

function showError(message, { retry = false } = {}) {
  ui.error.replaceChildren(message || '');
  if (message && retry) {
    const button = document.createElement('button');
    button.type = 'button';
    button.id = 'inbox-retry';
    button.className = 'btn btn-small';
    button.textContent = 'Retry now';
    button.addEventListener('click', () => { if (retryNow) retryNow(); });
    ui.error.append(' ', button);
  }
  ui.error.hidden = !message;
}

function normalize(n) {
  return {
    notificationID: Number(n.notificationID),
    eventID: n.eventID,
    sourceID: typeof n.sourceID === 'string' ? n.sourceID : '',
    data: n.data,
    category: typeof n.category === 'string' && n.category ? n.category : 'general',
    createdAt: n.createdAt,
    readAt: n.readAt || null,
  };
}

function bumpCursor(id) {
  if (Number.isFinite(id) && (state.lastEventId == null || id > state.lastEventId)) state.lastEventId = id;
}

function matchesFilter(n) {
  if (state.filter.category && n.category !== state.filter.category) return false;
  if (state.filter.status === 'unread' && n.readAt) return false;
  if (state.filter.status === 'read' && !n.readAt) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// connection indicator and badge

const CONN_TEXT = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline', error: 'Error' };
const CONN_TITLE = { live: 'Receiving notifications live', offline: 'Not connected', error: 'The server answered with an error' };

let wasLive = false;

function setConn(s) {
  if (s === 'live' && state.conn !== 'live') {
    // Back after a break: missed notifications are replayed by the stream, but read states
    // changed elsewhere meanwhile are not, so resynchronise the list and the count.
    if (wasLive && api) onReset();
    wasLive = true;
  }
  state.conn = s;
  ui.conn.dataset.state = s;
  ui.connText.textContent = CONN_TEXT[s] || s;
  ui.conn.title = CONN_TITLE[s] || 'Trying to reach the server';
}

function setUnread(n) {
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

function scheduleCountRefresh(delay = 250) {
  clearTimeout(countTimer);
  countTimer = setTimeout(loadCount, delay);
}

async function loadCount() {
  const seq = ++countSeq;
  const version = state.countVersion;
  try {
    const res = await api.unreadCount();
    // a newer request, or a newer authoritative count (read-state event, local change) wins
    if (seq === countSeq && version === state.countVersion) setUnread(res.unreadCount);
  } catch (err) {
    console.warn('mercurio: unread count failed', err.message);
  }
}

// ---------------------------------------------------------------------------------------------
// list rendering

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
  }
  const unread = !n.readAt;
  li.classList.toggle('unread', unread);
  li.dataset.category = n.category;
  li.dataset.read = unread ? 'false' : 'true';
  const { title, text } = describe(n.data);
  const chip = $('.chip', li);
  chip.textContent = n.category;
  chip.style.setProperty('--hue', hue(n.category));
  $('.item-source', li).textContent = n.sourceID ? `from ${n.sourceID}` : '';
  const time = $('.item-time', li);
  time.dateTime = n.createdAt || '';
  time.textContent = relativeTime(n.createdAt);
  if (n.createdAt) time.title = new Date(n.createdAt).toLocaleString();
  const titleEl = $('.item-title', li);
  titleEl.textContent = title;
  titleEl.hidden = !title;
  $('.item-text', li).textContent = text;
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

function syncList() {
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
}

function refreshTimes() {
  for (const time of ui.list.querySelectorAll('time[datetime]')) {
    if (time.dateTime) time.textContent = relativeTime(time.dateTime);
  }
}

function addCategories(cats) {
  let changed = false;
  for (const c of cats) {
    if (c && !state.categories.has(c)) { state.categories.add(c); changed = true; }
  }
  if (changed) { renderCategoryFilter(); renderMutes(); }
}

function renderCategoryFilter() {
  const sel = ui.categoryFilter;
  const current = state.filter.category;
  const cats = [...state.categories].sort();
  sel.replaceChildren(new Option('All categories', ''), ...cats.map((c) => new Option(c, c)));
  sel.value = current;
}

// ---------------------------------------------------------------------------------------------
// loading

async function loadList({ append = false } = {}) {
  const loading = { arrived: [] };
  if (!append) state.loading = loading;
  ui.list.setAttribute('aria-busy', 'true');
  try {
    const res = await api.list({
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
    const res = await api.list({ status: 'all', limit: 1 });
    for (const n of res.notifications || []) bumpCursor(Number(n.notificationID));
  } else {
    for (const id of state.items.keys()) bumpCursor(id);
  }
  if (state.lastEventId == null) state.lastEventId = 0;
}

async function loadPrefs() {
  try {
    const res = await api.preferences();
    state.muted = new Set(res.mutedCategories || []);
    addCategories(state.muted);
    renderMutes();
  } catch (err) {
    console.warn('mercurio: preferences failed', err.message);
  }
}

// ---------------------------------------------------------------------------------------------
// stream events (from our own stream when leader, relayed by the leader otherwise)

function handleStreamEvent(type, data) {
  // one odd event must neither stop the stream nor keep it from the other tabs
  try {
    if (type === 'message') onNotification(data);
    else if (type === 'read-state') onReadState(data);
    else if (type === 'reset') onReset();
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
    const li = nodes.get(id);
    if (li) {
      li.classList.add('is-new');
      setTimeout(() => li.classList.remove('is-new'), 2500);
    }
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
    else if (n && d.status === 'read' && !n.readAt) n.readAt = now;
    else if (n && d.status === 'unread') n.readAt = null;
  }
  if (typeof d.unreadCount === 'number') {
    state.countVersion++;
    setUnread(d.unreadCount);
  }
  syncList();
}

async function onReset() {
  try {
    await Promise.all([loadList(), loadCount()]);
  } catch { /* shown in the banner */ }
}

// ---------------------------------------------------------------------------------------------
// actions

async function setRead(id, read) {
  const n = state.items.get(id);
  if (!n || !!n.readAt === read) return;
  const before = n.readAt;
  n.readAt = read ? new Date().toISOString() : null;
  state.countVersion++;
  setUnread(state.unread + (read ? -1 : 1));
  syncList();
  try {
    if (read) await api.markRead(id);
    else await api.markUnread(id);
    showError('');
  } catch (err) {
    n.readAt = before;
    syncList();
    showError(`Could not mark ${read ? 'read' : 'unread'}: ${err.message}`);
  }
  scheduleCountRefresh();
}

async function removeItem(id) {
  const n = state.items.get(id);
  if (!n) return;
  state.items.delete(id);
  if (!n.readAt) { state.countVersion++; setUnread(state.unread - 1); }
  syncList();
  try {
    await api.remove(id);
    showError('');
    announce('Notification deleted');
  } catch (err) {
    if (err.status !== 404) {
      state.items.set(id, n);
      syncList();
      showError(`Could not delete: ${err.message}`);
    }
  }
  scheduleCountRefresh();
}

async function markAllRead() {
  const category = state.filter.category || undefined;
  const now = new Date().toISOString();
  for (const n of state.items.values()) if (!n.readAt && (!category || n.category === category)) n.readAt = now;
  state.countVersion++;
  if (!category) setUnread(0);
  syncList();
  try {
    await api.markAllRead(category);
    showError('');
    announce(category ? `All “${category}” notifications marked read` : 'All notifications marked read');
  } catch (err) {
    showError(`Could not mark all read: ${err.message}`);
    loadList().catch(() => {});
  }
  scheduleCountRefresh(0);
}

// ---------------------------------------------------------------------------------------------
// per-item menu

let openMenu = null;

function closeMenu({ focus = false } = {}) {
  if (!openMenu) return;
  const { btn, menu } = openMenu;
  menu.hidden = true;
  btn.setAttribute('aria-expanded', 'false');
  btn.closest('.item')?.classList.remove('menu-open');
  openMenu = null;
  if (focus) btn.focus();
}

function toggleMenu(btn) {
  const menu = btn.nextElementSibling;
  if (openMenu && openMenu.btn === btn) { closeMenu(); return; }
  closeMenu();
  menu.hidden = false;
  btn.setAttribute('aria-expanded', 'true');
  btn.closest('.item')?.classList.add('menu-open');
  openMenu = { btn, menu };
  menu.querySelector('.menu-item')?.focus();
}

ui.list.addEventListener('click', (e) => {
  const li = e.target.closest('.item');
  if (!li) return;
  const id = Number(li.dataset.id);
  const menuBtn = e.target.closest('.menu-btn');
  if (menuBtn) { toggleMenu(menuBtn); return; }
  const action = e.target.closest('.menu-item');
  if (action) {
    closeMenu({ focus: action.dataset.action !== 'delete' });
    if (action.dataset.action === 'delete') removeItem(id);
    else setRead(id, li.dataset.read === 'false');
    return;
  }
  if (e.target.closest('.item-main')) setRead(id, true);
});

ui.list.addEventListener('keydown', (e) => {
  if (!openMenu) return;
  const items = [...openMenu.menu.querySelectorAll('.menu-item')];
  const i = items.indexOf(document.activeElement);
  if (e.key === 'Escape') { e.preventDefault(); closeMenu({ focus: true }); }
  else if (e.key === 'ArrowDown') { e.preventDefault(); items[(i + 1) % items.length].focus(); }
  else if (e.key === 'ArrowUp') { e.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
  else if (e.key === 'Home') { e.preventDefault(); items[0].focus(); }
  else if (e.key === 'End') { e.preventDefault(); items[items.length - 1].focus(); }
  else if (e.key === 'Tab') closeMenu();
});

document.addEventListener('click', (e) => {
  if (openMenu && !openMenu.btn.closest('.item-menu').contains(e.target)) closeMenu();
  if (ui.muteMenu.open && !ui.muteMenu.contains(e.target)) ui.muteMenu.open = false;
});

document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && ui.muteMenu.open) {
    ui.muteMenu.open = false;
    $('summary', ui.muteMenu).focus();
  }
});

// ---------------------------------------------------------------------------------------------
// filters and mutes

for (const btn of ui.statusButtons) {
  btn.addEventListener('click', () => {
    if (!api || state.filter.status === btn.dataset.status) return;
    state.filter.status = btn.dataset.status;
    for (const b of ui.statusButtons) b.setAttribute('aria-pressed', String(b === btn));
    loadList().catch(() => {});
  });
}

ui.categoryFilter.addEventListener('change', () => {
  if (!api) return;
  state.filter.category = ui.categoryFilter.value;
  loadList().catch(() => {});
});

function renderMutes() {
  const cats = [...new Set([...state.categories, ...state.muted])].sort();
  ui.muteList.replaceChildren(...cats.map((c) => {
    const li = document.createElement('li');
    const label = document.createElement('label');
    label.className = 'switch';
    const input = document.createElement('input');
    input.type = 'checkbox';
    input.setAttribute('role', 'switch');
    input.checked = state.muted.has(c);
    input.dataset.category = c;
    const track = document.createElement('span');
    track.className = 'switch-track';
    track.setAttribute('aria-hidden', 'true');
    const text = document.createElement('span');
    text.textContent = `Mute ${c}`;
    label.append(input, track, text);
    li.append(label);
    return li;
  }));
  ui.mutedCount.textContent = String(state.muted.size);
  ui.mutedCount.hidden = state.muted.size === 0;
}

async function saveMutes(next) {
  const previous = state.muted;
  state.muted = new Set(next);
  renderMutes();
  ui.muteError.hidden = true;
  try {
    const res = await api.setPreferences([...state.muted].sort());
    state.muted = new Set(res.mutedCategories || []);
  } catch (err) {
    state.muted = previous;
    ui.muteError.textContent = `Could not save: ${err.message}`;
    ui.muteError.hidden = false;
  }
  renderMutes();
}

ui.muteList.addEventListener('change', (e) => {
  const input = e.target.closest('input[data-category]');
  if (!input || !api) return;
  const next = new Set(state.muted);
  if (input.checked) next.add(input.dataset.category); else next.delete(input.dataset.category);
  saveMutes(next).then(() => ui.muteList.querySelector(`input[data-category="${CSS.escape(input.dataset.category)}"]`)?.focus());
});

ui.muteAdd.addEventListener('submit', (e) => {
  e.preventDefault();
  const c = ui.muteAddInput.value.trim();
  if (!api) return;
  if (!SLUG.test(c)) {
    ui.muteError.textContent = 'A category is 1–32 lowercase letters, digits, - or _.';
    ui.muteError.hidden = false;
    return;
  }
  ui.muteAddInput.value = '';
  addCategories([c]);
  saveMutes(new Set([...state.muted, c]));
});

ui.markAll.addEventListener('click', () => { if (api) markAllRead(); });
ui.loadMore.addEventListener('click', () => { if (api) loadList({ append: true }).catch(() => {}); });
ui.bell.addEventListener('click', () => {
  ui.inbox.hidden = false;
  ui.inbox.scrollIntoView({ block: 'start', behavior: 'smooth' });
  ui.inboxHeading.focus({ preventScroll: true });
});

ui.userForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const user = ui.userInput.value.trim();
  if (!user) return;
  const next = new URLSearchParams(location.search);
  next.set('user', user);
  location.href = `${location.pathname}?${next}`;
});

// ---------------------------------------------------------------------------------------------
// tabs and stream

function startStreaming() {
  coordinator = new TabCoordinator({
    user: state.user,
    onLead: () => {
      state.isLeader = true;
      stream = new StreamConnection({
        api,
        transport,
        getLastEventId: () => state.lastEventId,
        onEvent: (type, data) => {
          handleStreamEvent(type, data);
          coordinator.post({ type: 'event', event: type, data });
        },
        onState: (s) => {
          setConn(s);
          coordinator.post({ type: 'state', state: s });
        },
      });
      stream.start();
    },
    onMessage: (msg) => {
      if (msg.type === 'hello') {
        if (state.isLeader) coordinator.post({ type: 'state', state: state.conn });
      } else if (state.isLeader) {
        // only followers take relayed events
      } else if (msg.type === 'event') {
        handleStreamEvent(msg.event, msg.data);
      } else if (msg.type === 'state') {
        setConn(msg.state);
      } else if (msg.type === 'leader-leaving') {
        setConn('reconnecting');
      }
    },
  });
  setConn('connecting');
  coordinator.start();
}

window.addEventListener('pagehide', (e) => {
  if (e.persisted) return;
  if (coordinator) coordinator.stop();
  if (stream) stream.stop();
});
window.addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });

// ---------------------------------------------------------------------------------------------
// boot

function renderChooser() {
  ui.inboxSub.textContent = 'Choose whose notifications to open.';
  ui.empty.hidden = false;
  ui.emptyText.textContent = '';
  const p = document.createElement('p');
  p.className = 'chooser';
  p.append('Open the inbox of ');
  for (const u of ['123', '456']) {
    const a = document.createElement('a');
    a.className = 'btn btn-small';
    const next = new URLSearchParams(location.search);
    next.set('user', u);
    a.href = `?${next}`;
    a.textContent = `user ${u}`;
    p.append(a, ' ');
  }
  p.append('or type any id above.');
  ui.emptyText.replaceChildren(p);
  ui.markAll.hidden = true;
  $('.toolbar', ui.inbox).hidden = true;
  setConn('offline');
}

async function boot() {
  if (view === 'publisher') { ui.inbox.hidden = true; document.body.classList.add('view-publisher'); }
  if (view === 'inbox') { ui.publisher.hidden = true; document.body.classList.add('view-inbox'); }
  if (view !== 'inbox') initPublisher();
  setInterval(refreshTimes, 30000);

  const identity = resolveIdentity();
  if (identity && identity.error) { showError(identity.error); renderChooser(); return; }
  if (!identity) { renderChooser(); setUnread(0); return; }

  state.user = identity.user;
  ui.userInput.value = identity.user;
  ui.inboxSub.textContent = `User ${identity.user}`;
  setUnread(0);
  const auth = new Auth(identity.token, identity.renew);
  api = new ClientApi(auth, identity.user);
  try {
    if (!auth.token) await auth.refresh();
  } catch (err) {
    showError(`Could not get a token for user ${identity.user}: ${err.message}`);
    setConn('offline');
    return;
  }
  await loadUntilItWorks();
  startStreaming();
}

/** The first load gives the stream its cursor: retry it, backing off, until it works. */
async function loadUntilItWorks() {
  for (let attempt = 0; ; attempt++) {
    try {
      await Promise.all([loadList(), loadCount(), loadPrefs()]);
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

function waitOrRetry(delay) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); retryNow = null; resolve(); };
    const timer = setTimeout(done, delay);
    retryNow = done;
  });
}

window.__mercurio = Object.freeze({
  get clientID() { return state.user; },
  get transport() { return transport; },
  get isLeader() { return state.isLeader; },
  get connection() { return state.conn; },
  get lastEventId() { return state.lastEventId; },
  get unreadCount() { return state.unread; },
  get streamOpens() { return stream ? stream.opens : 0; },
  get ready() { return state.ready; },
  get itemIDs() { return [...state.items.keys()].sort((a, b) => b - a); },
});

boot();
