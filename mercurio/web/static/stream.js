// The notification stream, with two transports:
//
//  - "eventsource" (default): the native EventSource, authenticated by a single-use ticket from
//    POST /api/clients/{c}/stream-tickets. A ticket cannot be reused, so the browser's own
//    automatic reconnect would only get 401s: on any error we close the EventSource and
//    reconnect ourselves with a NEW ticket and lastEventId = the last notification id seen.
//  - "fetch" (?transport=fetch): fetch() with `Authorization: Bearer`, reading response.body
//    and parsing the SSE frames with SSEParser.
//
// Both back off 1 s, 2 s, 4 s … capped at 15 s, with jitter, and report their state truthfully:
// "connecting" (first attempt), "live" (the server answered and the stream is open),
// "reconnecting" (waiting or retrying after a failure), "offline" (the browser is offline, or
// stopped).

import { SSEParser } from './sse.js';

const NAMED_EVENTS = ['read-state', 'reset', 'token-expired'];
const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 15000;
// The fetch transport sees heartbeat comments; if nothing at all arrives for this long the
// connection is presumed dead (a half-open TCP connection) and is replaced.
const FETCH_IDLE_TIMEOUT_MS = 75000;

export function backoffDelay(attempt) {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
  // "equal jitter": between 60 % and 100 % of the step, so tabs and devices spread out.
  return Math.round(base * (0.6 + 0.4 * Math.random()));
}

export class StreamConnection {
  /**
   * @param {object} o
   * @param {import('./api.js').ClientApi} o.api
   * @param {'eventsource'|'fetch'} o.transport
   * @param {() => (number|null)} o.getLastEventId
   * @param {(type: string, data: any, id: string|null) => void} o.onEvent
   * @param {(state: string, detail?: object) => void} o.onState
   */
  constructor({ api, transport, getLastEventId, onEvent, onState }) {
    this.api = api;
    this.transport = transport === 'fetch' ? 'fetch' : 'eventsource';
    this.getLastEventId = getLastEventId;
    this.onEvent = onEvent;
    this.onState = onState;
    this.state = 'offline';
    this.generation = 0;
    this.attempt = 0;
    this.opens = 0;
    this.running = false;
    this.timer = null;
    this.es = null;
    this.abort = null;
    this._onOnline = () => { if (this.running) this._reconnectNow(); };
    this._onOffline = () => { if (this.running) this._setState('offline'); };
  }

  start() {
    if (this.running) return;
    this.running = true;
    window.addEventListener('online', this._onOnline);
    window.addEventListener('offline', this._onOffline);
    this._setState('connecting');
    this._connect();
  }

  stop() {
    this.running = false;
    window.removeEventListener('online', this._onOnline);
    window.removeEventListener('offline', this._onOffline);
    this._teardown();
    this._setState('offline');
  }

  _setState(state, detail = {}) {
    if (this.state === state && !detail.force) return;
    this.state = state;
    this.onState(state, detail);
  }

  _teardown() {
    this.generation++;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.es) { this.es.close(); this.es = null; }
    if (this.abort) { this.abort.abort(); this.abort = null; }
  }

  _reconnectNow() {
    this._teardown();
    this.attempt = 0;
    this._setState('reconnecting');
    this._connect();
  }

  _url(extra) {
    const q = new URLSearchParams(extra);
    const last = this.getLastEventId();
    if (last != null) q.set('lastEventId', String(last));
    return `${this.api.streamURL()}?${q}`;
  }

  _connect() {
    if (!this.running) return;
    const gen = ++this.generation;
    if (this.transport === 'fetch') this._connectFetch(gen);
    else this._connectEventSource(gen);
  }

  _opened() {
    this.attempt = 0;
    this.opens++;
    this._setState('live');
  }

  _failed(gen, reason) {
    if (gen !== this.generation || !this.running) return;
    this._teardown();
    const delay = backoffDelay(this.attempt++);
    this._setState(navigator.onLine === false ? 'offline' : 'reconnecting', { delay, reason });
    const next = this.generation;
    this.timer = setTimeout(() => {
      if (next === this.generation) this._connect();
    }, delay);
  }

  async _tokenExpired(gen) {
    if (gen !== this.generation) return;
    this._teardown();
    this._setState('reconnecting', { reason: 'token expired' });
    const next = this.generation;
    try {
      await this.api.auth.refresh();
    } catch (err) {
      if (next === this.generation) this._failed(next, err.message);
      return;
    }
    if (next === this.generation) this._connect();
  }

  _dispatch(gen, type, raw, id) {
    if (gen !== this.generation) return;
    let data = null;
    if (raw) {
      try { data = JSON.parse(raw); } catch {
        console.warn('mercurio: ignoring a stream event with invalid JSON', type);
        return;
      }
    }
    try {
      this.onEvent(type, data, id || null);
    } catch (err) {
      // a handler bug must not look like a broken connection (the fetch transport would reconnect)
      console.warn('mercurio: a stream event handler failed', type, err && err.message);
    }
    if (type === 'token-expired') this._tokenExpired(gen);
  }

  // ---- native EventSource + single-use ticket --------------------------------------------

  async _connectEventSource(gen) {
    let ticket;
    try {
      ({ ticket } = await this.api.streamTicket());
    } catch (err) {
      this._failed(gen, `ticket: ${err.message}`);
      return;
    }
    if (gen !== this.generation || !this.running) return;
    const es = new EventSource(this._url({ ticket }));
    this.es = es;
    es.onopen = () => { if (gen === this.generation) this._opened(); };
    es.onmessage = (e) => this._dispatch(gen, 'message', e.data, e.lastEventId);
    for (const name of NAMED_EVENTS) {
      es.addEventListener(name, (e) => this._dispatch(gen, name, e.data, e.lastEventId));
    }
    es.onerror = () => {
      // The ticket is spent: never let the EventSource retry on its own.
      es.close();
      this._failed(gen, 'stream error');
    };
  }

  // ---- fetch + Authorization header + our own SSE parser -------------------------------------

  async _connectFetch(gen) {
    const ctrl = new AbortController();
    this.abort = ctrl;
    let response;
    try {
      response = await fetch(this._url({}), {
        headers: { Accept: 'text/event-stream', ...this.api.auth.header() },
        cache: 'no-store',
        signal: ctrl.signal,
      });
    } catch (err) {
      if (!ctrl.signal.aborted) this._failed(gen, err.message);
      return;
    }
    if (gen !== this.generation) { ctrl.abort(); return; }
    if (response.status === 401 && this.api.auth.canRenew && this.attempt === 0) {
      // The token may simply have expired: renew it once and retry at once.
      ctrl.abort();
      this.attempt = 1;
      try { await this.api.auth.refresh(); } catch (err) { this._failed(gen, err.message); return; }
      if (gen === this.generation) { this.generation++; this._connect(); }
      return;
    }
    if (!response.ok || !response.body) {
      ctrl.abort();
      this._failed(gen, `HTTP ${response.status}`);
      return;
    }
    this._opened();
    const parser = new SSEParser((ev) => this._dispatch(gen, ev.type, ev.data, ev.id));
    const reader = response.body.getReader();
    let idle = null;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctrl.abort(), FETCH_IDLE_TIMEOUT_MS);
    };
    arm();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        arm();
        parser.push(value);
        if (gen !== this.generation) { ctrl.abort(); return; }
      }
    } catch (err) {
      // aborted by us (stop/teardown: generation moved on) or by the idle timer, or a network error
    } finally {
      clearTimeout(idle);
    }
    this._failed(gen, 'stream ended');
  }
}
