// The user's preferences: the muted categories, loaded from and saved to the server, and the
// "Muted" menu that edits them.

import { $, ui } from './dom.js';
import { state, session } from './state.js';
import { addCategories, renderMutes } from './categories.js';

const SLUG = /^[a-z0-9_-]{1,32}$/;

export async function loadPrefs() {
  try {
    const res = await session.api.preferences();
    state.muted = new Set(res.mutedCategories || []);
    addCategories(state.muted);
    renderMutes();
  } catch (err) {
    console.warn('mercurio: preferences failed', err.message);
  }
}

/** Show `next` at once, then keep what the server stored (or go back to what was there). */
async function saveMutes(next) {
  const previous = state.muted;
  state.muted = new Set(next);
  renderMutes();
  ui.muteError.hidden = true;
  try {
    const res = await session.api.setPreferences([...state.muted].sort());
    state.muted = new Set(res.mutedCategories || []);
  } catch (err) {
    state.muted = previous;
    ui.muteError.textContent = `Could not save: ${err.message}`;
    ui.muteError.hidden = false;
  }
  renderMutes();
}

export function wireMuteMenu() {
  ui.muteList.addEventListener('change', (e) => {
    const input = e.target.closest('input[data-category]');
    if (!input || !session.api) return;
    const next = new Set(state.muted);
    if (input.checked) next.add(input.dataset.category); else next.delete(input.dataset.category);
    saveMutes(next).then(() => ui.muteList.querySelector(`input[data-category="${CSS.escape(input.dataset.category)}"]`)?.focus());
  });

  ui.muteAdd.addEventListener('submit', (e) => {
    e.preventDefault();
    const c = ui.muteAddInput.value.trim();
    if (!session.api) return;
    if (!SLUG.test(c)) {
      ui.muteError.textContent = 'A category is 1–32 lowercase letters, digits, - or _.';
      ui.muteError.hidden = false;
      return;
    }
    ui.muteAddInput.value = '';
    addCategories([c]);
    saveMutes(new Set([...state.muted, c]));
  });

  document.addEventListener('click', (e) => {
    if (ui.muteMenu.open && !ui.muteMenu.contains(e.target)) ui.muteMenu.open = false;
  });

  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && ui.muteMenu.open) {
      ui.muteMenu.open = false;
      $('summary', ui.muteMenu).focus();
    }
  });
}
