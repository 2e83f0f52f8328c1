// The categories the inbox knows of (seen in notifications, or muted), shown in two places:
// the category filter <select> and the preferences' mute table (with the channel switches).

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

// The mute table's columns: where a category is muted, and how its switch is labelled.
// "Mute <category>" names the everywhere switch alone (no other label contains it).
const COLUMNS = [
  { where: 'all', label: (c) => `Mute ${c}` },
  { where: 'push', label: (c) => `No desktop notifications for ${c}` },
  { where: 'email', label: (c) => `No e-mail digests for ${c}` },
];

function muteSwitch(category, column) {
  const label = document.createElement('label');
  label.className = 'switch';
  const input = document.createElement('input');
  input.type = 'checkbox';
  input.setAttribute('role', 'switch');
  input.setAttribute('aria-label', column.label(category));
  input.dataset.category = category;
  input.dataset.where = column.where;
  const everywhere = state.muted.has(category);
  if (column.where === 'all') {
    input.checked = everywhere;
  } else {
    // Muted everywhere covers every channel: shown on, and not to be changed here.
    input.checked = everywhere || state.channels[column.where].muted.has(category);
    input.disabled = everywhere;
  }
  const track = document.createElement('span');
  track.className = 'switch-track';
  track.setAttribute('aria-hidden', 'true');
  label.append(input, track);
  return label;
}

export function renderMutes() {
  const { push, email } = state.channels;
  const cats = [...new Set([...state.categories, ...state.muted, ...push.muted, ...email.muted])].sort();
  ui.muteList.replaceChildren(...cats.map((c) => {
    const row = document.createElement('tr');
    const name = document.createElement('th');
    name.scope = 'row';
    name.textContent = c;
    row.append(name, ...COLUMNS.map((column) => {
      const cell = document.createElement('td');
      cell.append(muteSwitch(c, column));
      return cell;
    }));
    return row;
  }));
  for (const input of ui.channelSwitches) input.checked = state.channels[input.dataset.channel].enabled;
  ui.mutedCount.textContent = String(state.muted.size);
  ui.mutedCount.hidden = state.muted.size === 0;
}
