// The "Enable desktop notifications" control: asks the browser's permission, registers the
// service worker (sw.js, scope /app/), subscribes to Web Push with the server's VAPID key and
// gives the server the subscription (POST /api/clients/{c}/push-subscriptions); "Turn off"
// deletes the server's record and unsubscribes. Hidden when the browser has no Push API or
// the server has push off (the VAPID key route answers 404). Every failure is said in words.

import { ui } from './dom.js';
import { session } from './state.js';
import { APP_SCOPE } from './desktop.js';

const SW_URL = `${APP_SCOPE}sw.js`;
const ENABLE = 'Enable desktop notifications';
const DISABLE = 'Turn off desktop notifications';
const BLOCKED = 'Desktop notifications are blocked for this site. Allow them in the browser\'s site settings, then try again.';

let key = null;      // the server's VAPID public key (Uint8Array, an uncompressed P-256 point)
let record = null;   // the server's record of this browser's subscription: {id, endpoint, createdAt}
let busy = false;

export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

function base64urlBytes(text) {
  const b64 = String(text).replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, '='));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function sameBytes(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

function say(text, { error = false } = {}) {
  ui.pushStatus.textContent = text;
  ui.pushStatus.classList.toggle('error', error);
  ui.pushStatus.classList.toggle('muted', !error);
  ui.pushStatus.hidden = !text;
}

function render() {
  ui.pushToggle.textContent = record ? DISABLE : ENABLE;
  ui.pushToggle.disabled = busy;
  if (record) say('Desktop notifications on');
  else if (Notification.permission === 'denied') say(BLOCKED, { error: true });
  else say('');
}

/** The server's key; false when push is off on this server. */
async function loadKey() {
  try {
    const res = await session.api.vapidPublicKey();
    const bytes = base64urlBytes(res && res.publicKey);
    if (bytes.length !== 65 || bytes[0] !== 4) throw new Error('the server\'s push key is not a P-256 public key');
    key = bytes;
    return true;
  } catch (err) {
    if (err.status === 404) return false;
    throw err;
  }
}

async function currentSubscription() {
  const reg = await navigator.serviceWorker.getRegistration(APP_SCOPE);
  return reg ? reg.pushManager.getSubscription() : null;
}

/** Is this browser's subscription one the server holds for this user? */
async function loadRecord() {
  const sub = Notification.permission === 'granted' ? await currentSubscription() : null;
  if (!sub) { record = null; return; }
  const res = await session.api.pushSubscriptions();
  record = (res.subscriptions || []).find((s) => s.endpoint === sub.endpoint) || null;
}

async function subscribe() {
  await navigator.serviceWorker.register(SW_URL, { scope: APP_SCOPE });
  const reg = await navigator.serviceWorker.ready; // subscribing needs an active worker
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameBytes(sub.options && sub.options.applicationServerKey, key)) {
    // made with another key (the server's VAPID key changed): that subscription cannot be reused
    await sub.unsubscribe();
    sub = null;
  }
  return sub || reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
}

/** Turn on; a notice to show when it could not be done without it being an error. */
async function enable() {
  if (!key && !(await loadKey())) {
    ui.pushToggle.hidden = true;
    return { text: 'Desktop notifications are off on this server.', error: false };
  }
  const permission = await Notification.requestPermission();
  if (permission === 'denied') return { text: BLOCKED, error: true };
  if (permission !== 'granted') {
    return { text: 'Desktop notifications were not allowed: the browser\'s question was dismissed.', error: true };
  }
  const sub = await subscribe();
  record = await session.api.addPushSubscription(sub.toJSON());
  return null;
}

async function disable() {
  if (record) {
    await session.api.removePushSubscription(record.id).catch((err) => { if (err.status !== 404) throw err; });
  }
  record = null;
  const sub = await currentSubscription();
  if (sub) await sub.unsubscribe();
  return null;
}

async function toggle() {
  if (busy) return;
  const turningOn = !record;
  busy = true;
  render();
  say(turningOn ? 'Turning desktop notifications on…' : 'Turning desktop notifications off…');
  let notice;
  try {
    notice = turningOn ? await enable() : await disable();
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
  ui.pushToggle.addEventListener('click', toggle);
  try {
    if (!(await loadKey())) return;
    ui.pushToggle.hidden = false;
    await loadRecord();
    render();
  } catch (err) {
    // the server or the browser failed us, not "push is off": keep the control, say why
    ui.pushToggle.hidden = false;
    render();
    say(`Desktop notifications are unavailable right now: ${err && err.message ? err.message : err}`, { error: true });
  }
}
