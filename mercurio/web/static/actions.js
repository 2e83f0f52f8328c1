// What the user does to notifications: open one (marks it read), the per-item menu (mark read
// or unread, delete; keyboard operable) and "Mark all read". Each change shows at once and is
// undone, badge included, if it cannot be made: the item and the badge never disagree.

import { ui } from './dom.js';
import { state, session } from './state.js';
import { announce, showError } from './banner.js';
import { setUnread, scheduleCountRefresh } from './header.js';
import { syncList, toggleMore } from './list.js';
import { loadList } from './loading.js';

/** Why a change could not be made, in words: offline is said as such, not "Failed to fetch". */
function failure(what, err) {
  if ((err && err.network) || navigator.onLine === false) {
    return `You are offline: could not ${what}. Try again once you are back online.`;
  }
  return `Could not ${what}: ${err.message}`;
}

async function setRead(id, read) {
  const n = state.items.get(id);
  if (!n || !!n.readAt === read) return;
  const before = n.readAt;
  n.readAt = read ? new Date().toISOString() : null;
  state.countVersion++;
  setUnread(state.unread + (read ? -1 : 1));
  syncList();
  try {
    if (read) await session.api.markRead(id);
    else await session.api.markUnread(id);
    showError('');
  } catch (err) {
    n.readAt = before;
    state.countVersion++;
    setUnread(state.unread + (read ? 1 : -1));
    syncList();
    showError(failure(`mark it ${read ? 'read' : 'unread'}`, err));
  }
  scheduleCountRefresh();
}

/** Mark one read by its id, whether the list shows it or not (a desktop notification's click). */
export async function markReadByID(id) {
  if (state.items.has(id)) { await setRead(id, true); return; }
  try {
    await session.api.markRead(id);
    showError('');
  } catch (err) {
    // 404: deleted meanwhile, nothing left to mark
    if (err.status !== 404) showError(failure('mark it read', err));
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
    await session.api.delete(id);
    showError('');
    announce('Notification deleted');
  } catch (err) {
    if (err.status !== 404) {
      state.items.set(id, n);
      if (!n.readAt) { state.countVersion++; setUnread(state.unread + 1); }
      syncList();
      showError(failure('delete it', err));
    }
  }
  scheduleCountRefresh();
}

export async function markAllRead() {
  const category = state.filter.category || undefined;
  const now = new Date().toISOString();
  const changed = [...state.items.values()].filter((n) => !n.readAt && (!category || n.category === category));
  const unreadBefore = state.unread;
  for (const n of changed) n.readAt = now;
  state.countVersion++;
  if (!category) setUnread(0);
  syncList();
  try {
    await session.api.markAllRead({ category });
    showError('');
    announce(category ? `All “${category}” notifications marked read` : 'All notifications marked read');
  } catch (err) {
    for (const n of changed) n.readAt = null;
    state.countVersion++;
    setUnread(unreadBefore);
    syncList();
    showError(failure('mark all read', err));
    if (!err.network) loadList().catch(() => {});
  }
  scheduleCountRefresh(0);
}

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

export function wireItemActions() {
  ui.list.addEventListener('click', (e) => {
    const li = e.target.closest('.item');
    if (!li) return;
    const id = Number(li.dataset.id);
    if (e.target.closest('.show-more')) { toggleMore(li); return; }
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
  });
}
