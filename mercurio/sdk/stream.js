// One live stream: a native EventSource authenticated by a single-use ticket from
// POST /api/clients/{c}/stream-tickets (the JWT never in a URL). A ticket cannot be reused, so
// the browser's own automatic reconnect would only get 401s: on any error the EventSource is
// closed and a new one opened with a NEW ticket and lastEventId = the newest notification
// seen, after a backoff of 1 s, 2 s, 4 s … capped at 15 s, with jitter.
//
// The client's `transport: 'fetch'` reads the stream with fetch() and an Authorization header
// instead (SSE frames parsed by sse.js): for a page that cannot use tickets, and for tests.
//
// States: "connecting" (first attempt), "live" (the stream is open), "reconnecting" (waiting
// or retrying after a failure), "offline" (the browser is offline), "closed" (stopped).

import { MercurioError } from './errors.js';
import { SSEParser } from './sse.js';

const NAMED_EVENTS = ['read-state', 'reset', 'token-expired'];
const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 15000;
// The fetch transport sees the heartbeat comments; when nothing at all arrives for this long
// the connection is presumed dead (a half-open TCP connection) and replaced.
const FETCH_IDLE_TIMEOUT_MS = 75000;

/** The wait before reconnect attempt `attempt` (0-based), in ms; random in [60 %, 100 %] of the step. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.6 + 0.4 * random()));
}

function onlineNow() {
  return typeof navigator === 'undefined' || navigator.onLine !== false;
}

export class StreamConnection {
  /**
   * @param {object} o
   * @param {import('./client.js').MercurioClient} o.client
   * @param {() => (number|null)} o.getLastEventId
   * @param {(type: string, data: any, id: string|null) => void} o.onEvent
   * @param {(state: string, detail: object) => void} o.onState
   * @param {string[]} [o.categories]
   */
  constructor({ client, getLastEventId, onEvent, onState, categories }) {
    this.client = client;
    this.getLastEventId = getLastEventId;
    this.onEvent = onEvent;
    this.onState = onState;
    this.categories = categories;
    this.state = 'closed';
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
    if (typeof window !== 'undefined' && window.addEventListener) {
      window.addEventListener('online', this._onOnline);
      window.addEventListener('offline', this._onOffline);
    }
    this._setState('connecting');
    this._connect();
  }

  stop() {
    this.running = false;
    if (typeof window !== 'undefined' && window.removeEventListener) {
      window.removeEventListener('online', this._onOnline);
      window.removeEventListener('offline', this._onOffline);
    }
    this._teardown();
    this._setState('closed');
  }

  _setState(state, detail = {}) {
    if (this.state === state && !detail.error) return;
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

  _failed(gen, error) {
    if (gen !== this.generation || !this.running) return;
    this._teardown();
    const delay = backoffDelay(this.attempt++);
    this._setState(onlineNow() ? 'reconnecting' : 'offline', { delay, error });
    const next = this.generation;
    this.timer = setTimeout(() => { if (next === this.generation) this._connect(); }, delay);
  }

  async _tokenExpired(gen) {
    if (gen !== this.generation) return;
    this._teardown();
    this._setState('reconnecting');
    const next = this.generation;
    try {
      await this.client.tokens.refresh();
    } catch (err) {
      if (next === this.generation) this._failed(next, err);
      return;
    }
    if (next === this.generation && this.running) this._connect();
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
      console.warn('mercurio: a stream event handler failed', type, err && err.message);
    }
    if (type === 'token-expired') this._tokenExpired(gen);
  }

  _connect() {
    if (!this.running) return;
    const gen = ++this.generation;
    if (this.client.transport === 'fetch') this._connectFetch(gen);
    else this._connectEventSource(gen);
  }

  _opened(gen) {
    if (gen !== this.generation) return;
    this.attempt = 0;
    this.opens++;
    this._setState('live');
  }

  async _connectEventSource(gen) {
    let ticket;
    try {
      ({ ticket } = await this.client.streamTicket());
    } catch (err) {
      this._failed(gen, err);
      return;
    }
    if (gen !== this.generation || !this.running) return;
    const url = this.client.streamURL({ ticket, lastEventId: this.getLastEventId(), categories: this.categories });
    const es = new this.client._EventSource(url);
    this.es = es;
    es.onopen = () => this._opened(gen);
    es.onmessage = (e) => this._dispatch(gen, 'message', e.data, e.lastEventId);
    for (const name of NAMED_EVENTS) {
      es.addEventListener(name, (e) => this._dispatch(gen, name, e.data, e.lastEventId));
    }
    let opened = false;
    es.addEventListener('open', () => { opened = true; });
    es.onerror = async () => {
      es.close(); // the ticket is spent: never let the EventSource retry on its own
      // An EventSource never says why it was refused; when it never opened, ask once with
      // fetch, so that "too many open streams" (429) or a refused token is said in words.
      const why = opened ? null : await this._refusal(gen);
      this._failed(gen, why || new Error('the stream was interrupted'));
    };
  }

  /** The server's refusal of this stream as a MercurioError, or null (unreachable, or open). */
  async _refusal(gen) {
    const ctrl = new AbortController();
    try {
      const token = await this.client.tokens.get();
      if (gen !== this.generation) return null;
      const url = this.client.streamURL({ lastEventId: this.getLastEventId(), categories: this.categories });
      const response = await this.client._fetch(url, {
        headers: { Accept: 'text/event-stream', Authorization: `Bearer ${token}` },
        signal: ctrl.signal,
      });
      if (response.ok) return null; // it opens now: the next attempt will do
      const body = await response.json().catch(() => null);
      const text = body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
      return new MercurioError(response.status, text, body);
    } catch {
      return null;
    } finally {
      ctrl.abort(); // never keep the probe's stream open
    }
  }

  /** The fetch transport: the JWT in an Authorization header, never in the URL. */
  async _connectFetch(gen) {
    const ctrl = new AbortController();
    this.abort = ctrl;
    let response;
    try {
      const token = await this.client.tokens.get();
      if (gen !== this.generation) return;
      const url = this.client.streamURL({ lastEventId: this.getLastEventId(), categories: this.categories });
      response = await this.client._fetch(url, {
        headers: { Accept: 'text/event-stream', Authorization: `Bearer ${token}` },
        cache: 'no-store',
        signal: ctrl.signal,
      });
    } catch (err) {
      if (!ctrl.signal.aborted) this._failed(gen, err);
      return;
    }
    if (gen !== this.generation) { ctrl.abort(); return; }
    if (response.status === 401 && this.attempt === 0) {
      // the token may simply have expired: renew it once and retry at once
      ctrl.abort();
      this.attempt = 1;
      try { await this.client.tokens.refresh(); } catch (err) { this._failed(gen, err); return; }
      if (gen === this.generation && this.running) this._connect();
      return;
    }
    if (!response.ok || !response.body) {
      const body = await response.json().catch(() => null);
      ctrl.abort();
      const text = body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
      this._failed(gen, new MercurioError(response.status, text, body));
      return;
    }
    this._opened(gen);
    await this._readFetch(gen, ctrl, response.body.getReader());
    this._failed(gen, new Error('the stream was interrupted'));
  }

  async _readFetch(gen, ctrl, reader) {
    const parser = new SSEParser((ev) => this._dispatch(gen, ev.type, ev.data, ev.id));
    // an abort ends the read even when the body is not tied to the request's signal
    ctrl.signal.addEventListener('abort', () => { reader.cancel().catch(() => {}); });
    let idle = null;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctrl.abort(), FETCH_IDLE_TIMEOUT_MS);
    };
    arm();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || gen !== this.generation) break;
        arm();
        parser.push(value);
      }
    } catch {
      // aborted by us (stop, teardown, the idle timer) or a network error: _failed decides
    } finally {
      clearTimeout(idle);
      if (gen !== this.generation) ctrl.abort();
    }
  }
}
