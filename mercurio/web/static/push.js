// The "Enable desktop notifications" control, around the SDK's PushOptIn (/sdk/push.js: the
// permission, the service worker sw.js of scope /app/, PushManager.subscribe() with the
// server's VAPID key, POST/DELETE /api/clients/{c}/push-subscriptions). Hidden when the browser
// has no Push API or the server has push off. Every failure is said in words.

import { PushOptIn, pushSupported } from '/sdk/push.js';
import { ui } from './dom.js';
import { session } from './state.js';
import { APP_SCOPE } from './desktop.js';

const ENABLE = 'Enable desktop notifications';
const DISABLE = 'Turn off desktop notifications';
const BLOCKED = 'Desktop notifications are blocked for this site. Allow them in the browser\'s site settings, then try again.';

let optIn = null;
let busy = false;

function say(text, { error = false } = {}) {
  ui.pushStatus.textContent = text;
  ui.pushStatus.classList.toggle('error', error);
  ui.pushStatus.classList.toggle('muted', !error);
  ui.pushStatus.hidden = !text;
}

function render() {
  ui.pushToggle.textContent = optIn.enabled ? DISABLE : ENABLE;
  ui.pushToggle.disabled = busy;
  if (optIn.enabled) say('Desktop notifications on');
  else if (Notification.permission === 'denied') say(BLOCKED, { error: true });
  else say('');
}

/** Turn on; a notice to show when it could not be done. */
async function enable() {
  if (!optIn.key && !(await optIn.available())) {
    ui.pushToggle.hidden = true;
    return { text: 'Desktop notifications are off on this server.', error: false };
  }
  const why = await optIn.enable();
  return why ? { text: why, error: true } : null;
}

async function toggle() {
  if (busy) return;
  const turningOn = !optIn.enabled;
  busy = true;
  render();
  say(turningOn ? 'Turning desktop notifications on…' : 'Turning desktop notifications off…');
  let notice = null;
  try {
    if (turningOn) notice = await enable();
    else await optIn.disable();
  } catch (err) {
    const reason = err && err.message ? err.message : String(err);
    notice = { text: `Could not turn desktop notifications ${turningOn ? 'on' : 'off'}: ${reason}`, error: true };
  }
  busy = false;
  render();
  if (notice) say(notice.text, { error: notice.error });
}

/** Show the control if this browser and this server can do Web Push, in its current state. */
export async function initPush() {
  if (!pushSupported() || !session.api) return;
  optIn = new PushOptIn(session.api, `${APP_SCOPE}sw.js`);
  ui.pushToggle.addEventListener('click', toggle);
  try {
    if (!(await optIn.available())) return;
    ui.pushToggle.hidden = false;
    render();
  } catch (err) {
    // the server or the browser failed us, not "push is off": keep the control, say why
    ui.pushToggle.hidden = false;
    render();
    say(`Desktop notifications are unavailable right now: ${err && err.message ? err.message : err}`, { error: true });
  }
}
