// Web Push for the inbox's opt-in: a service worker of the embedding page's origin, the
// server's VAPID key, PushManager.subscribe() and POST /api/clients/{c}/push-subscriptions
// (the web app at /app/ uses this too, around its own button).

export function pushSupported() {
  return typeof window !== 'undefined' && 'serviceWorker' in navigator && 'PushManager' in window &&
    'Notification' in window;
}

export function base64urlBytes(text) {
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

export class PushOptIn {
  /**
   * @param {import('./client.js').MercurioClient} client
   * @param {string} workerURL  a service worker on this page's origin that shows the pushes
   */
  constructor(client, workerURL) {
    this.client = client;
    this.workerURL = workerURL;
    this.key = null;
    this.record = null; // the server's record of this browser's subscription
  }

  /** Can this server and browser do it? Loads the key and the current state. */
  async available() {
    if (!pushSupported() || !this.workerURL) return false;
    const publicKey = await this.client.vapidPublicKey();
    if (!publicKey) return false;
    const bytes = base64urlBytes(publicKey);
    if (bytes.length !== 65 || bytes[0] !== 4) throw new Error('the server\'s push key is not a P-256 public key');
    this.key = bytes;
    await this._loadRecord();
    return true;
  }

  get enabled() { return this.record !== null; }

  async _registration() {
    return navigator.serviceWorker.getRegistration(new URL(this.workerURL, location.href).href);
  }

  async _loadRecord() {
    const reg = Notification.permission === 'granted' ? await this._registration() : null;
    const sub = reg ? await reg.pushManager.getSubscription() : null;
    if (!sub) { this.record = null; return; }
    const res = await this.client.pushSubscriptions();
    this.record = (res.subscriptions || []).find((s) => s.endpoint === sub.endpoint) || null;
  }

  /** Turn on: null when done, else a sentence saying why not. */
  async enable() {
    const permission = await Notification.requestPermission();
    if (permission === 'denied') return 'Desktop notifications are blocked for this site in the browser\'s settings.';
    if (permission !== 'granted') return 'Desktop notifications were not allowed.';
    await navigator.serviceWorker.register(this.workerURL);
    const reg = await navigator.serviceWorker.ready;
    let sub = await reg.pushManager.getSubscription();
    if (sub && !sameBytes(sub.options && sub.options.applicationServerKey, this.key)) {
      await sub.unsubscribe(); // made with another key: cannot be reused
      sub = null;
    }
    sub = sub || await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: this.key });
    this.record = await this.client.addPushSubscription(sub.toJSON());
    return null;
  }

  async disable() {
    if (this.record) {
      await this.client.removePushSubscription(this.record.id).catch((err) => { if (err.status !== 404) throw err; });
    }
    this.record = null;
    const reg = await this._registration();
    const sub = reg ? await reg.pushManager.getSubscription() : null;
    if (sub) await sub.unsubscribe();
    return null;
  }
}
