// What the inbox tells the user in words: the error banner (with "Retry now" while the first
// load backs off) and the screen reader announcements.

import { ui } from './dom.js';

let retryNow = null; // set while waitOrRetry() waits: skips the rest of the wait

export function announce(text) {
  ui.announcer.textContent = '';
  // a new text node makes screen readers speak even when the same text repeats
  requestAnimationFrame(() => { ui.announcer.textContent = text; });
}

export function showError(message, { retry = false } = {}) {
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

/** Wait `delay` ms, or less if the user presses the banner's "Retry now". */
export function waitOrRetry(delay) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); retryNow = null; resolve(); };
    const timer = setTimeout(done, delay);
    retryNow = done;
  });
}
