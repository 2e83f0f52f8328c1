// The user's preferences: the categories muted everywhere or per channel, and the channels'
// switches (desktop notifications, e-mail digests), loaded from and saved to the server; and
// the "Preferences" menu that edits them.

import { $, ui } from './dom.js';
import { state, session } from './state.js';
import { addCategories, renderMutes } from './categories.js';

const SLUG = /^[a-z0-9_-]{1,32}$/;

// The app edits the channels too, which the SDK's preferences()/setPreferences() leave out:
// it sends the route's whole shape through the client's request() (same token and retry).
const prefsPath = () => `/api/clients/${encodeURIComponent(session.api.clientId)}/preferences`;
const getPrefs = () => session.api.request('GET', prefsPath());
const putPrefs = (change) => session.api.request('PUT', prefsPath(), change);

let confirmed = null;  // the server's last answer: what a failed save goes back to
let queue = Promise.resolve();  // saves go one at a time, in the order they were made
let pending = 0;

function channelFrom(c) {
  return { enabled: !(c && c.enabled === false), muted: new Set((c && c.mutedCategories) || []) };
}

/** Show what the server answered (GET or PUT: the same shape). */
function apply(res) {
  confirmed = res;
  const channels = res.channels || {};
  state.muted = new Set(res.mutedCategories || []);
  state.channels = { push: channelFrom(channels.push), email: channelFrom(channels.email) };
  addCategories([...state.muted, ...state.channels.push.muted, ...state.channels.email.muted]);
  renderMutes();
}

function showError(text) {
  ui.muteError.textContent = text;
  ui.muteError.hidden = false;
}

export async function loadPrefs() {
  try {
    apply(await getPrefs());
    ui.muteError.hidden = true;
  } catch (err) {
    // The inbox works without them: say so in the menu rather than hold the list back.
    showError(`Could not load your preferences: ${err.message}`);
  }
}

/** Focus the switch a re-render replaced, so the keyboard stays where it was. */
function refocus(input) {
  if (!input) return;
  const sel = input.dataset.channel
    ? `#${input.id}`
    : `input[data-where="${input.dataset.where}"][data-category="${CSS.escape(input.dataset.category)}"]`;
  (input.dataset.channel ? document : ui.muteList).querySelector(sel)?.focus();
}

/**
 * Show `change` at once (show() edits the state), then send it; the fields it leaves out stay
 * as stored. The server's answer is shown once no later save is waiting; a failure goes back
 * to the last answer and says why.
 */
function save(change, show, input) {
  show();
  renderMutes();
  refocus(input);
  ui.muteError.hidden = true;
  pending += 1;
  queue = queue.then(async () => {
    try {
      const res = await putPrefs(change);
      if (pending === 1) apply(res); else confirmed = res;
    } catch (err) {
      if (confirmed) apply(confirmed);
      showError(`Could not save: ${err.message}`);
    } finally {
      pending -= 1;
    }
    refocus(input);
  });
  return queue;
}

function toggleMute(input) {
  const { category, where } = input.dataset;
  const muted = where === 'all' ? state.muted : state.channels[where].muted;
  const next = new Set(muted);
  if (input.checked) next.add(category); else next.delete(category);
  const list = [...next].sort();
  const change = where === 'all'
    ? { mutedCategories: list }
    : { channels: { [where]: { mutedCategories: list } } };
  return save(change, () => {
    if (where === 'all') state.muted = next; else state.channels[where].muted = next;
  }, input);
}

function toggleChannel(input) {
  const where = input.dataset.channel;
  const enabled = input.checked;
  return save({ channels: { [where]: { enabled } } }, () => {
    state.channels[where].enabled = enabled;
  }, input);
}

export function wireMuteMenu() {
  ui.muteList.addEventListener('change', (e) => {
    const input = e.target.closest('input[data-category]');
    if (input && session.api) toggleMute(input);
  });
  for (const input of ui.channelSwitches) {
    input.addEventListener('change', () => { if (session.api) toggleChannel(input); });
  }

  ui.muteAdd.addEventListener('submit', (e) => {
    e.preventDefault();
    const c = ui.muteAddInput.value.trim();
    if (!session.api) return;
    if (!SLUG.test(c)) {
      showError('A category is 1–32 lowercase letters, digits, - or _.');
      return;
    }
    ui.muteAddInput.value = '';
    addCategories([c]);
    const next = new Set([...state.muted, c]);
    save({ mutedCategories: [...next].sort() }, () => { state.muted = next; });
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
