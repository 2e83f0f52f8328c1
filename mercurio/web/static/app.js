// Mercurio notification centre — the browser app served at /app/. This module is the entry
// (index.html loads it with <script type="module">): it wires the page's controls and boots.
//
// Who the user is: see identity.js (an embedder's token, a `#token=` fragment, or ?user=<id>;
// with none the page asks which user to open and navigates to ?user=).
//
// Other query parameters:
//   ?transport=fetch   read the stream with fetch() + Authorization header instead of the
//                      default native EventSource + single-use stream ticket (the SDK's
//                      `transport` option).
//   ?view=inbox|publisher   show only one of the two panels.
//
// The data and the stream come from the SDK (/sdk/, clients/js/src): MercurioClient makes the
// REST calls, renews the token and holds the live stream shared by the tabs; PushOptIn does
// the Web Push subscription. The app's own modules are the page around them, each with one job:
//   dom.js (the page's elements), state.js (the model), format.js (data → text),
//   banner.js (error banner, announcements), header.js (connection indicator, unread badge),
//   list.js (rendering the list), categories.js (category filter and mute table),
//   prefs.js (preferences: mutes, per channel too, and the channel switches),
//   loading.js (loading, with backoff), events.js (stream events),
//   actions.js (read/unread/delete, the item menu), streaming.js (the SDK's stream, to the page),
//   identity.js (who am I, development tokens), publisher.js (the publisher console), push.js
//   (the "Enable desktop notifications" control around the SDK's PushOptIn), desktop.js (the
//   desktop notifications sw.js shows: closed when read anywhere, a click marks read), sw.js
//   (the service worker).
//
// Tabs of the same user share one stream (the SDK's shared.js); state for tests and debugging
// is exposed read-only as window.__mercurio.

import { MercurioClient } from '/sdk/client.js';
import { initPublisher } from './publisher.js';
import { $, ui } from './dom.js';
import { state, session } from './state.js';
import { showError } from './banner.js';
import { onBackLive, setConn, setUnread } from './header.js';
import { refreshTimes } from './list.js';
import { wireMuteMenu } from './prefs.js';
import { wireTopics } from './topics.js';
import { loadList, loadUntilItWorks, resync } from './loading.js';
import { markAllRead, wireItemActions } from './actions.js';
import { startStreaming, streamInfo, transport, wirePageLifecycle } from './streaming.js';
import { resolveIdentity, tokenProvider } from './identity.js';
import { closeAlreadyRead, handleLanding, wireDesktopNotifications } from './desktop.js';
import { initPush } from './push.js';

export { relativeTime, safeText, describe } from './format.js';

const view = new URLSearchParams(location.search).get('view');

function wireToolbar() {
  for (const btn of ui.statusButtons) {
    btn.addEventListener('click', () => {
      if (!session.api || state.filter.status === btn.dataset.status) return;
      state.filter.status = btn.dataset.status;
      for (const b of ui.statusButtons) b.setAttribute('aria-pressed', String(b === btn));
      loadList().catch(() => {});
    });
  }

  ui.categoryFilter.addEventListener('change', () => {
    if (!session.api) return;
    state.filter.category = ui.categoryFilter.value;
    loadList().catch(() => {});
  });

  ui.markAll.addEventListener('click', () => { if (session.api) markAllRead(); });
  ui.loadMore.addEventListener('click', () => { if (session.api) loadList({ append: true }).catch(() => {}); });
  // the inbox scrolls to below the sticky top bar, whose height changes as it wraps
  const keepTopbarHeight = () => document.documentElement.style.setProperty('--topbar-h', `${ui.topbar.offsetHeight}px`);
  keepTopbarHeight();
  new ResizeObserver(keepTopbarHeight).observe(ui.topbar);
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
}

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
  session.api = new MercurioClient({ clientId: identity.user, token: tokenProvider(identity), transport });
  try {
    await session.api.tokens.get();
  } catch (err) {
    showError(err.status === 404 && !identity.token
      ? 'This server issues no development tokens (it runs in production): open the app with a token (#token=…) or from a page that gives one.'
      : `Could not get a token for user ${identity.user}: ${err.message}`);
    setConn('offline');
    return;
  }
  await loadUntilItWorks();
  startStreaming();
  closeAlreadyRead();
  initPush();
  await handleLanding();
}

window.__mercurio = Object.freeze({
  get clientID() { return state.user; },
  get transport() { return transport; },
  get isLeader() { return streamInfo().isLeader; },
  get connection() { return state.conn; },
  get lastEventId() { return state.lastEventId; },
  get unreadCount() { return state.unread; },
  get streamOpens() { return streamInfo().opens; },
  get ready() { return state.ready; },
  get itemIDs() { return [...state.items.keys()].sort((a, b) => b - a); },
});

// Every listener is in place before boot() starts loading (one document click handler per menu).
wireItemActions();
wireMuteMenu();
wireTopics();
wireToolbar();
wirePageLifecycle();
wireDesktopNotifications();
onBackLive(resync);
boot();
