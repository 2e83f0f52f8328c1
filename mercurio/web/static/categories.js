// The categories the inbox knows of (seen in notifications, or muted), shown in two places:
// the category filter <select> and the mute switches.

import { ui } from './dom.js';
import { state } from './state.js';

export function addCategories(cats) {
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

export function renderMutes() {
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
