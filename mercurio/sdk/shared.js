// One stream per server and client for the whole origin. In a tab, every subscribe() of that
// client shares one SharedStream. Across tabs, the tabs elect a leader with the Web Locks API;
// the leader holds the one EventSource (stream.js) and relays every event and its connection
// state to the other tabs over a BroadcastChannel. When the leader tab goes, its lock is
// released, the next waiting tab takes it and resumes from the newest notification id it saw
// (relayed events carry it), so nothing is lost.
//
// Without Web Locks or BroadcastChannel each tab holds its own stream.

import { StreamConnection } from './stream.js';

const registry = new Map();

function keyOf(client) {
  const origin = client.server || (typeof location !== 'undefined' ? location.origin : '');
  return `mercurio:${origin}:${client.clientId}`;
}

/** The SharedStream of this client's server and id in this tab (made on first use). */
export function sharedStream(client) {
  const key = keyOf(client);
  let shared = registry.get(key);
  if (!shared) {
    shared = new SharedStream(client, key);
    registry.set(key, shared);
  }
  return shared;
}

function call(fn, ...args) {
  if (typeof fn !== 'function') return;
  try { fn(...args); } catch (err) { console.warn('mercurio: a subscriber failed', err); }
}

/** A refusal the leader saw, as a structured-clonable {status, message} for the other tabs. */
function plainError(detail) {
  const err = detail && detail.error;
  return err ? { status: err.status || 0, message: String(err.message || err) } : null;
}

export class SharedStream {
  constructor(client, key) {
    this.client = client;
    this.key = key;
    this.listeners = new Set();
    this.lastEventId = null;
    this.status = 'closed';
    this.isLeader = false;
    this.conn = null;
    this.channel = null;
    this._release = null;
    this._abort = null;
  }

  /** Add a subscriber: {onNotification, onReadState, onReset, onStatus, lastEventId}. */
  add(handlers) {
    this.bump(handlers.lastEventId);
    this.listeners.add(handlers);
    if (this.listeners.size === 1) this._start(); // which tells it the status
    else call(handlers.onStatus, this.status);
    let open = true;
    return {
      close: () => {
        if (!open) return;
        open = false;
        this.listeners.delete(handlers);
        if (this.listeners.size === 0) this._stop();
      },
    };
  }

  bump(id) {
    const n = Number(id);
    // 0 is a cursor too: an inbox that was empty when listed replays all that arrives after
    if (id != null && Number.isSafeInteger(n) && n >= 0 && (this.lastEventId == null || n > this.lastEventId)) {
      this.lastEventId = n;
    }
  }

  _supported() {
    return typeof BroadcastChannel === 'function' && typeof navigator !== 'undefined' &&
      !!(navigator.locks && navigator.locks.request);
  }

  _start() {
    if (!this._supported()) { this._lead(); return; }
    this._setStatus('connecting', {});
    this.channel = new BroadcastChannel(this.key);
    this.channel.onmessage = (e) => this._onMessage(e.data || {});
    this._abort = new AbortController();
    // Waits in the lock's queue until the current leader (if any) goes away.
    navigator.locks.request(this.key, { signal: this._abort.signal }, () => new Promise((resolve) => {
      this._release = resolve;
      this._lead();
    })).catch((err) => { if (err && err.name !== 'AbortError') console.warn('mercurio: tab election failed', err); });
    this._post({ type: 'hello' });
  }

  _stop() {
    if (this.isLeader) this._post({ type: 'leader-leaving', lastEventId: this.lastEventId });
    this.isLeader = false;
    if (this.conn) { this.conn.stop(); this.conn = null; }
    if (this._unhold) { this._unhold(); this._unhold = null; }
    if (this._abort) { this._abort.abort(); this._abort = null; }
    if (this._release) { this._release(); this._release = null; }
    if (this.channel) { this.channel.close(); this.channel = null; }
    registry.delete(this.key);
  }

  _lead() {
    this.isLeader = true;
    this._unhold = this.client.tokens.hold();
    this.conn = new StreamConnection({
      client: this.client,
      getLastEventId: () => this.lastEventId,
      onEvent: (type, data, id) => {
        this._deliver(type, data, id);
        this._post({ type: 'event', event: type, data, id });
      },
      onState: (state, detail) => {
        this._setStatus(state, detail);
        this._post({ type: 'state', state, lastEventId: this.lastEventId, error: plainError(detail) });
      },
    });
    this.conn.start();
  }

  _post(msg) {
    if (!this.channel) return;
    try { this.channel.postMessage(msg); } catch (err) { console.warn('mercurio: relay failed', err); }
  }

  _onMessage(msg) {
    if (msg.type === 'hello') {
      if (this.isLeader) this._post({ type: 'state', state: this.status, lastEventId: this.lastEventId });
      return;
    }
    if (this.isLeader) return; // only followers take relayed events
    this.bump(msg.lastEventId);
    if (msg.type === 'event') this._deliver(msg.event, msg.data, msg.id);
    else if (msg.type === 'state') this._setStatus(msg.state, msg.error ? { error: msg.error } : {});
    else if (msg.type === 'leader-leaving') this._setStatus('reconnecting', {});
  }

  _setStatus(state, detail) {
    if (state === 'closed' && this.listeners.size) return; // a stopping leader, not ours
    if (state === this.status && !(detail && detail.error)) return;
    this.status = state;
    for (const h of this.listeners) call(h.onStatus, state, detail);
  }

  _deliver(type, data, id) {
    if (type === 'message') {
      if (!data || data.notificationID == null) return;
      this.bump(data.notificationID ?? id);
      for (const h of this.listeners) call(h.onNotification, data);
    } else if (type === 'read-state') {
      for (const h of this.listeners) call(h.onReadState, data);
    } else if (type === 'reset') {
      for (const h of this.listeners) call(h.onReset, data);
    } else if (type === 'token-expired') {
      this.bump(data && data.lastEventId);
    }
  }
}
