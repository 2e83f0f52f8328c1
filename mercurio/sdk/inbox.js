// <mercurio-inbox server="https://…" client-id="123">: a bell with an unread badge and a panel
// (the list, click to read, mark all read, an unread filter, load more, empty and error
// states, a push opt-in). The page gives it a `tokenProvider` (an async function returning a
// JWT for that client); it starts once it is in the document with a client id and a provider.
//
// Events (bubbling, composed): `mercurio:notification` {detail: {notification}} for each new
// notification that arrives live, `mercurio:read-state` {detail: {notificationID, status,
// category, unreadCount, source}} for each read state change, made here ("local") or in another
// tab or device ("stream").

import { MercurioClient } from './client.js';
import { describe, relativeTime } from './format.js';
import { PushOptIn } from './push.js';
import { BELL_ICON, STYLES } from './styles.js';

const PAGE_SIZE = 20;
const STATUS_TEXT = {
  reconnecting: 'Connection lost: reconnecting…',
  offline: 'You are offline: notifications will arrive when you are back.',
};

const TEMPLATE = `
<style>${STYLES}</style>
<button class="bell" part="bell" type="button" aria-haspopup="dialog" aria-expanded="false"
  aria-controls="panel">${BELL_ICON}<span class="badge" part="badge" aria-hidden="true" hidden>0</span></button>
<div class="panel" part="panel" id="panel" role="dialog" aria-modal="false" aria-labelledby="title" hidden>
  <div class="head" part="header">
    <h2 class="title" part="title" id="title" tabindex="-1">Notifications</h2>
    <div class="filter" part="filter" role="group" aria-label="Show">
      <button type="button" data-status="all" aria-pressed="true">All</button>
      <button type="button" data-status="unread" aria-pressed="false">Unread</button>
    </div>
    <button type="button" class="link mark-all" part="mark-all" disabled>Mark all read</button>
  </div>
  <p class="notice status" part="status" hidden></p>
  <div class="notice error" part="error" role="alert" hidden><span class="error-text"></span>
    <button type="button" class="retry" hidden>Retry</button></div>
  <div class="notice push" part="push" hidden>
    <button type="button" class="push-toggle">Enable desktop notifications</button>
    <span class="push-status" role="status"></span></div>
  <div class="body" part="body">
    <ul class="list" part="list" aria-label="Notifications"></ul>
    <p class="empty" part="empty" hidden>You have no notifications.</p>
    <button type="button" class="more" part="load-more" hidden>Load more</button>
  </div>
</div>
<div class="sr-only live" role="status" aria-live="polite"></div>
`;

function normalize(n) {
  return {
    ...n,
    notificationID: Number(n.notificationID),
    category: typeof n.category === 'string' && n.category ? n.category : 'general',
    readAt: n.readAt || null,
  };
}

function unreadLabel(n) {
  return n === 0 ? 'no unread notifications' : `${n} unread notification${n === 1 ? '' : 's'}`;
}

// Outside a browser (a server importing the package) there is no HTMLElement: a stand-in keeps
// the import working, and defineInbox() does nothing there.
const Base = typeof HTMLElement === 'undefined' ? class {} : HTMLElement;

export class MercurioInbox extends Base {
  static get observedAttributes() { return ['server', 'client-id']; }

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = TEMPLATE;
    const $ = (sel) => root.querySelector(sel);
    this._ui = {
      bell: $('.bell'), badge: $('.badge'), panel: $('.panel'), title: $('.title'),
      filters: [...root.querySelectorAll('.filter button')], markAll: $('.mark-all'),
      status: $('.status'), error: $('.error'), errorText: $('.error-text'), retry: $('.retry'),
      push: $('.push'), pushToggle: $('.push-toggle'), pushStatus: $('.push-status'),
      list: $('.list'), empty: $('.empty'), more: $('.more'), live: $('.live'),
    };
    this._tokenProvider = null;
    this._client = null;
    this._sub = null;
    this._session = 0;
    this._items = new Map(); // notificationID -> notification shown with the current filter
    this._rows = new Map(); // notificationID -> <li>
    this._filter = 'all';
    this._nextBefore = null;
    this._unread = 0;
    this._loading = 0;
    this._echoes = new Map(); // read-state changes made here, whose stream echo is not an event
    this._push = null;
    this._clock = null;
    this._wire();
  }

  /** The async function returning a JWT for client-id. */
  get tokenProvider() { return this._tokenProvider; }
  set tokenProvider(fn) {
    this._tokenProvider = typeof fn === 'function' ? fn : null;
    this._restart();
  }

  /** How many notifications are unread. */
  get unreadCount() { return this._unread; }

  /** The MercurioClient in use (null until started). */
  get client() { return this._client; }

  get open() { return !this._ui.panel.hidden; }

  connectedCallback() {
    // A property set before the element was defined sits on the instance: take it over.
    if (Object.hasOwn(this, 'tokenProvider')) {
      const fn = this.tokenProvider;
      delete this.tokenProvider;
      this._tokenProvider = typeof fn === 'function' ? fn : null;
    }
    document.addEventListener('click', this._onDocumentClick, true);
    window.addEventListener('resize', this._onResize);
    this._restart();
  }

  disconnectedCallback() {
    document.removeEventListener('click', this._onDocumentClick, true);
    window.removeEventListener('resize', this._onResize);
    this._stop();
  }

  attributeChangedCallback(_name, before, after) {
    if (before !== after) this._restart();
  }

  /** Open the panel (and load the list if it failed before). */
  show() {
    const { panel, bell, title } = this._ui;
    if (this.open) return;
    panel.hidden = false;
    bell.setAttribute('aria-expanded', 'true');
    this._place();
    document.addEventListener('scroll', this._onResize, { capture: true, passive: true });
    title.focus({ preventScroll: true });
    this._renderTimes();
    this._clock = setInterval(() => this._renderTimes(), 30000);
  }

  /** Close the panel; the focus goes back to the bell when it was inside. */
  hide({ focusBell = true } = {}) {
    const { panel, bell } = this._ui;
    if (!this.open) return;
    const inside = this.shadowRoot.activeElement !== null;
    panel.hidden = true;
    bell.setAttribute('aria-expanded', 'false');
    clearInterval(this._clock);
    document.removeEventListener('scroll', this._onResize, { capture: true });
    if (focusBell && inside) bell.focus();
  }

  // ---- wiring ---------------------------------------------------------------------------------

  _wire() {
    const ui = this._ui;
    ui.bell.addEventListener('click', () => (this.open ? this.hide() : this.show()));
    ui.panel.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') { e.stopPropagation(); this.hide(); }
    });
    ui.bell.addEventListener('keydown', (e) => { if (e.key === 'Escape' && this.open) this.hide(); });
    for (const btn of ui.filters) {
      btn.addEventListener('click', () => this._setFilter(btn.dataset.status));
    }
    ui.markAll.addEventListener('click', () => this._markAllRead());
    ui.more.addEventListener('click', () => this._load({ append: true }));
    ui.retry.addEventListener('click', () => this._load());
    ui.pushToggle.addEventListener('click', () => this._togglePush());
    ui.list.addEventListener('click', (e) => {
      const button = e.target.closest('button');
      const row = button && button.closest('li');
      if (!row) return;
      const id = Number(row.dataset.id);
      if (button.classList.contains('toggle')) this._setRead(id, !this._isRead(id));
      else if (!this._isRead(id)) this._setRead(id, true);
    });
    this._onDocumentClick = (e) => {
      if (this.open && !e.composedPath().includes(this)) this.hide({ focusBell: false });
    };
    this._onResize = () => { if (this.open) this._place(); };
  }

  /** Place the panel under the bell, fixed to the viewport (so that no scrolling or clipping
   * ancestor can hide it), inside the bell's box: the nearest clipping ancestor, else the
   * viewport; narrower when the box is, shifted sideways when it would stick out. */
  _place() {
    const { panel, bell } = this._ui;
    const box = this._box();
    const anchor = bell.getBoundingClientRect();
    const top = Math.round(anchor.bottom + 8);
    panel.style.position = 'fixed';
    panel.style.top = `${top}px`;
    panel.style.right = 'auto';
    panel.style.maxWidth = `${Math.max(200, Math.floor(box.right - box.left - 16))}px`;
    const room = Math.max(160, window.innerHeight - top - 8);
    panel.style.maxHeight = `min(var(--mercurio-panel-max-height, min(70vh, 560px)), ${room}px)`;
    const width = panel.offsetWidth;
    let left = anchor.right - width; // right edges aligned, as a menu under a bell at the right
    left = Math.min(left, box.right - 8 - width);
    left = Math.max(left, box.left + 8);
    panel.style.left = `${Math.round(left)}px`;
  }

  _box() {
    let left = 0;
    let right = document.documentElement.clientWidth;
    for (let el = this.parentElement || this.getRootNode().host; el; el = el.parentElement || (el.getRootNode() && el.getRootNode().host)) {
      if (el === document.body || el === document.documentElement) break;
      if (getComputedStyle(el).overflowX !== 'visible') {
        const rect = el.getBoundingClientRect();
        left = Math.max(left, rect.left);
        right = Math.min(right, rect.left + el.clientWidth);
        break;
      }
    }
    return { left, right };
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  _stop() {
    this._session++;
    if (this._sub) { this._sub.close(); this._sub = null; }
    this._client = null;
  }

  _restart() {
    this._stop();
    const clientId = this.getAttribute('client-id');
    if (!this.isConnected || !clientId || !this._tokenProvider) return;
    try {
      this._client = new MercurioClient({
        server: this.getAttribute('server') || '',
        clientId,
        token: () => this._tokenProvider(),
      });
    } catch (err) {
      this._showError(err.message, false);
      return;
    }
    this._items.clear();
    this._start(this._session);
  }

  async _start(session) {
    const ok = await this._load();
    if (session !== this._session) return;
    const newest = ok ? Math.max(0, ...this._items.keys()) : 0;
    this._sub = this._client.subscribe({
      lastEventId: newest || undefined,
      onNotification: (n) => this._onNotification(n),
      onReadState: (d) => this._onReadState(d),
      onReset: () => this._load(),
      onStatus: (s, detail) => this._onStatus(s, detail),
    });
    this._initPush(session);
  }

  // ---- loading --------------------------------------------------------------------------------

  /** Load the first page (or the next one); true when it worked. */
  async _load({ append = false } = {}) {
    const client = this._client;
    if (!client) return false;
    const seq = ++this._loading;
    const session = this._session;
    this._ui.more.disabled = true;
    try {
      const page = await client.list({
        status: this._filter,
        limit: PAGE_SIZE,
        before: append ? this._nextBefore ?? undefined : undefined,
      });
      if (seq !== this._loading || session !== this._session) return false;
      const fresh = page.notifications.map(normalize);
      if (!append) {
        // what arrived live while this page was on its way is newer than all of it: keep it
        const newest = fresh.length ? fresh[0].notificationID : 0;
        for (const id of [...this._items.keys()]) if (id <= newest || !this._matches(this._items.get(id))) this._items.delete(id);
      }
      for (const n of fresh) this._items.set(n.notificationID, n);
      this._nextBefore = page.nextBefore;
      this._setUnread(page.unreadCount);
      this._clearError();
      this._render();
      return true;
    } catch (err) {
      if (seq === this._loading && session === this._session) {
        this._showError(`Could not load notifications: ${err.message}`, true);
        this._render();
      }
      return false;
    } finally {
      this._ui.more.disabled = false;
    }
  }

  _setFilter(status) {
    if (status === this._filter) return;
    this._filter = status;
    for (const b of this._ui.filters) b.setAttribute('aria-pressed', String(b.dataset.status === status));
    this._items.clear();
    this._nextBefore = null;
    this._render();
    this._load();
  }

  _matches(n) {
    return this._filter !== 'unread' || !n.readAt;
  }

  _isRead(id) {
    const n = this._items.get(id);
    return !!(n && n.readAt);
  }

  // ---- the stream -----------------------------------------------------------------------------

  _onNotification(raw) {
    const n = normalize(raw);
    if (!Number.isSafeInteger(n.notificationID) || this._items.has(n.notificationID)) return;
    if (this._matches(n)) this._items.set(n.notificationID, n); // newer than all listed
    if (!n.readAt) this._setUnread(this._unread + 1);
    this._render();
    const { title, text } = describe(n.data);
    this._ui.live.textContent = `New notification: ${title || text}`;
    this._emit('mercurio:notification', { notification: n });
  }

  _onReadState(d) {
    if (!d) return;
    const key = this._echoKey(d.notificationID, d.status, d.category);
    const echoes = this._echoes.get(key) || 0;
    this._apply(d);
    if (echoes > 0) {
      // this element's own change coming back: it was an event already
      if (echoes === 1) this._echoes.delete(key); else this._echoes.set(key, echoes - 1);
      return;
    }
    this._emit('mercurio:read-state', { ...d, source: 'stream' });
  }

  _echoKey(id, status, category) {
    // one notification's change is known by its id (the server adds its category)
    return id == null ? `*:${status}:${category ?? ''}` : `${id}:${status}`;
  }

  /** Apply a read-state change to the list and the badge. */
  _apply(d) {
    const now = new Date().toISOString();
    if (d.notificationID == null) {
      for (const n of this._items.values()) {
        if (!d.category || n.category === d.category) n.readAt = n.readAt || now;
      }
    } else {
      const id = Number(d.notificationID);
      const n = this._items.get(id);
      if (d.status === 'deleted') this._items.delete(id);
      if (d.status === 'deleted' && n && !n.readAt && typeof d.unreadCount !== 'number') {
        this._setUnread(Math.max(0, this._unread - 1)); // a shared row: the count is ours to keep
      }
      else if (n && d.status === 'read') n.readAt = n.readAt || now;
      else if (n && d.status === 'unread') n.readAt = null;
    }
    if (this._filter === 'unread') {
      for (const [id, n] of this._items) if (n.readAt) this._items.delete(id);
    }
    if (typeof d.unreadCount === 'number') this._setUnread(d.unreadCount);
    this._render();
  }

  _onStatus(state, detail = {}) {
    const { status } = this._ui;
    const refused = detail.error && detail.error.status >= 400 ? detail.error : null;
    const text = refused && state === 'reconnecting'
      ? `Not receiving live: ${refused.message}. Retrying…`
      : STATUS_TEXT[state] || '';
    status.textContent = text;
    status.hidden = !text;
    if (state === 'live' && this._wasDown) this._load(); // read states changed meanwhile are not replayed
    this._wasDown = state === 'reconnecting' || state === 'offline';
    this.dataset.connection = state;
  }

  // ---- actions --------------------------------------------------------------------------------

  async _setRead(id, read) {
    const client = this._client;
    const n = this._items.get(id);
    if (!client || !n) return;
    const status = read ? 'read' : 'unread';
    const before = n.readAt;
    n.readAt = read ? new Date().toISOString() : null; // at once; undone if the server says no
    this._setUnread(this._unread + (read ? -1 : 1));
    this._render();
    const key = this._echoKey(id, status, null);
    this._echoes.set(key, (this._echoes.get(key) || 0) + 1);
    try {
      await (read ? client.markRead(id) : client.markUnread(id));
      this._clearError();
      this._emit('mercurio:read-state', {
        notificationID: id, status, category: n.category, unreadCount: this._unread, source: 'local',
      });
    } catch (err) {
      this._echoes.delete(key);
      n.readAt = before;
      this._setUnread(this._unread + (read ? 1 : -1));
      this._render();
      this._showError(`Could not mark it ${status}: ${err.message}`, false);
    }
  }

  async _markAllRead() {
    const client = this._client;
    if (!client) return;
    const key = this._echoKey(null, 'read', null);
    this._echoes.set(key, (this._echoes.get(key) || 0) + 1);
    this._ui.markAll.disabled = true;
    try {
      await client.markAllRead();
      this._clearError();
      this._apply({ notificationID: null, status: 'read', category: null, unreadCount: 0 });
      this._emit('mercurio:read-state', {
        notificationID: null, status: 'read', category: null, unreadCount: 0, source: 'local',
      });
    } catch (err) {
      this._echoes.delete(key);
      this._showError(`Could not mark all read: ${err.message}`, false);
      this._setUnread(this._unread);
    }
  }

  // ---- push opt-in ------------------------------------------------------------------------------

  async _initPush(session) {
    const attr = this.getAttribute('service-worker');
    const sameOrigin = !this._client.server || new URL(this._client.server).origin === location.origin;
    const worker = attr || (sameOrigin ? '/app/sw.js' : null);
    const push = new PushOptIn(this._client, worker);
    try {
      if (!(await push.available()) || session !== this._session) return;
    } catch (err) {
      return; // no opt-in rather than a broken one
    }
    this._push = push;
    this._renderPush();
    this._ui.push.hidden = false;
  }

  _renderPush(text = '') {
    const { pushToggle, pushStatus } = this._ui;
    pushToggle.textContent = this._push.enabled ? 'Turn off desktop notifications' : 'Enable desktop notifications';
    pushStatus.textContent = text || (this._push.enabled ? 'Desktop notifications on' : '');
  }

  async _togglePush() {
    if (!this._push || this._ui.pushToggle.disabled) return;
    this._ui.pushToggle.disabled = true;
    let text = '';
    try {
      text = (await (this._push.enabled ? this._push.disable() : this._push.enable())) || '';
    } catch (err) {
      text = `Could not change desktop notifications: ${err.message}`;
    }
    this._ui.pushToggle.disabled = false;
    this._renderPush(text);
  }

  // ---- rendering ------------------------------------------------------------------------------

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  _setUnread(n) {
    this._unread = Math.max(0, Number(n) || 0);
    const { badge, bell, markAll } = this._ui;
    badge.textContent = this._unread > 99 ? '99+' : String(this._unread);
    badge.hidden = this._unread === 0;
    bell.setAttribute('aria-label', `Notifications, ${unreadLabel(this._unread)}`);
    markAll.disabled = this._unread === 0;
  }

  _showError(text, retry) {
    this._ui.errorText.textContent = text;
    this._ui.retry.hidden = !retry;
    this._ui.error.hidden = false;
  }

  _clearError() {
    this._ui.error.hidden = true;
    this._ui.errorText.textContent = '';
  }

  _render() {
    const { list, empty, more } = this._ui;
    const ids = [...this._items.keys()].sort((a, b) => b - a);
    for (const [id, row] of this._rows) {
      if (!this._items.has(id)) { row.remove(); this._rows.delete(id); }
    }
    let previous = null;
    for (const id of ids) {
      const row = this._row(this._items.get(id));
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (row !== expected) list.insertBefore(row, expected);
      previous = row;
    }
    const failed = !this._ui.error.hidden && !this._ui.retry.hidden;
    empty.hidden = ids.length > 0 || failed;
    empty.textContent = this._filter === 'unread' ? 'No unread notifications.' : 'You have no notifications.';
    more.hidden = this._nextBefore == null || ids.length === 0;
  }

  _row(n) {
    let row = this._rows.get(n.notificationID);
    if (!row) {
      row = document.createElement('li');
      row.dataset.id = String(n.notificationID);
      row.innerHTML = `<button type="button" class="main" part="item-button"><span class="dot" aria-hidden="true"></span>
        <span class="text"><span class="sr-only state"></span><span class="item-title" part="item-title"></span>
        <span class="item-body" part="item-body"></span><span class="meta" part="item-meta"><span class="category"></span>
        · <time></time></span></span></button>
        <button type="button" class="toggle" part="item-toggle"><span aria-hidden="true">✓</span></button>`;
      const { title, text } = describe(n.data);
      row.querySelector('.item-title').textContent = title;
      row.querySelector('.item-body').textContent = text;
      row.querySelector('.category').textContent = n.category;
      row.querySelector('time').dateTime = n.createdAt || '';
      this._rows.set(n.notificationID, row);
    }
    const read = !!n.readAt;
    row.className = read ? 'item' : 'item unread';
    row.setAttribute('part', read ? 'item' : 'item item-unread');
    row.querySelector('.state').textContent = read ? '' : 'Unread: ';
    const toggle = row.querySelector('.toggle');
    toggle.setAttribute('aria-label', read ? 'Mark as unread' : 'Mark as read');
    toggle.title = read ? 'Mark as unread' : 'Mark as read';
    row.querySelector('time').textContent = relativeTime(n.createdAt);
    return row;
  }

  _renderTimes() {
    for (const [id, row] of this._rows) {
      const n = this._items.get(id);
      if (n) row.querySelector('time').textContent = relativeTime(n.createdAt);
    }
  }
}

/** Define <mercurio-inbox> once (a second copy of the SDK on the page keeps the first). */
export function defineInbox(name = 'mercurio-inbox') {
  if (typeof customElements !== 'undefined' && !customElements.get(name)) {
    customElements.define(name, MercurioInbox);
  }
}
