// MercurioClient: the REST routes of docs/API.md for one client (one user's inbox), and its
// live stream (subscribe). Every call carries `Authorization: Bearer <jwt>`; a 401 asks the
// token function once more and retries. The JWT never goes into a URL.

import { MercurioError, MercurioNetworkError } from './errors.js';
import { TokenSource } from './token.js';
import { sharedStream } from './shared.js';

const STATUSES = ['all', 'read', 'unread'];
const TRANSPORTS = ['eventsource', 'fetch'];

/** The server's base URL without a trailing slash; '' means this page's origin. */
export function normalizeServer(server) {
  if (server == null || server === '') return '';
  const text = String(server).trim().replace(/\/+$/, '');
  if (!/^https?:\/\//i.test(text)) {
    throw new TypeError(`MercurioClient: server must be an http(s) URL, got ${JSON.stringify(server)}`);
  }
  return text;
}

/** A notification id as the path wants it: a positive integer, else a TypeError. */
export function notificationId(id) {
  const text = String(id);
  if (!/^[1-9][0-9]{0,18}$/.test(text)) {
    throw new TypeError(`a notification id is a positive integer, got ${JSON.stringify(id)}`);
  }
  return text;
}

/** The query string of a list() call (exported for tests). */
export function listQuery({ status = 'all', limit, before, category } = {}) {
  if (!STATUSES.includes(status)) {
    throw new TypeError(`status must be one of ${STATUSES.join(', ')}, got ${JSON.stringify(status)}`);
  }
  const q = new URLSearchParams({ status });
  if (limit != null) q.set('limit', String(limit));
  if (before != null) q.set('before', notificationId(before));
  if (category) q.set('category', String(category));
  return q.toString();
}

async function parseBody(response) {
  const text = await response.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

function errorText(data, status) {
  return (data && typeof data === 'object' && typeof data.error === 'string' && data.error) || `HTTP ${status}`;
}

export class MercurioClient {
  /**
   * @param {object} options
   * @param {string} [options.server]  the Mercurio server's URL ('' or absent: this origin)
   * @param {string} options.clientId  whose inbox (the token's user)
   * @param {(() => Promise<string>) | string} options.token  an async function returning a JWT
   * @param {typeof fetch} [options.fetch]  a fetch implementation (tests)
   * @param {typeof EventSource} [options.EventSource]  an EventSource constructor (tests)
   * @param {'eventsource'|'fetch'} [options.transport]  how subscribe() reads the stream: a
   *   native EventSource with single-use tickets (default), or fetch() with the JWT in a header
   */
  constructor({ server, clientId, token, fetch: fetchImpl, EventSource: esImpl, transport } = {}) {
    if (clientId == null || String(clientId) === '') throw new TypeError('MercurioClient: clientId is required');
    this.server = normalizeServer(server);
    this.clientId = String(clientId);
    this.tokens = new TokenSource(token);
    this._fetch = fetchImpl || ((...args) => globalThis.fetch(...args));
    this._EventSource = esImpl || globalThis.EventSource;
    if (transport != null && !TRANSPORTS.includes(transport)) {
      throw new TypeError(`MercurioClient: transport must be one of ${TRANSPORTS.join(', ')}, got ${JSON.stringify(transport)}`);
    }
    this.transport = transport || 'eventsource';
    this._base = `/api/clients/${encodeURIComponent(this.clientId)}`;
  }

  /** Send one request; the parsed JSON answer, or a MercurioError. */
  async request(method, path, body) {
    const url = `${this.server}${path}`;
    for (let attempt = 0; ; attempt++) {
      const token = attempt === 0 ? await this.tokens.get() : await this.tokens.refresh();
      const init = { method, headers: { Accept: 'application/json', Authorization: `Bearer ${token}` } };
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await this._fetch(url, init);
      } catch (err) {
        if (err && err.name === 'AbortError') throw err;
        throw new MercurioNetworkError(`could not reach ${this.server || 'the server'}: ${(err && err.message) || err}`);
      }
      if (response.status === 401 && attempt === 0) continue; // maybe just expired: renew once
      const data = await parseBody(response);
      if (!response.ok) throw new MercurioError(response.status, errorText(data, response.status), data);
      return data;
    }
  }

  _client(method, path, body) {
    return this.request(method, `${this._base}${path}`, body);
  }

  /** A page of notifications, newest first: {notifications, unreadCount, nextBefore}. */
  async list(options = {}) {
    const data = await this._client('GET', `/notifications?${listQuery(options)}`);
    return { notifications: data.notifications, unreadCount: data.unreadCount, nextBefore: data.nextBefore ?? null };
  }

  get(id) { return this._client('GET', `/notifications/${notificationId(id)}`); }
  markRead(id) { return this._client('PUT', `/notifications/${notificationId(id)}/read`); }
  markUnread(id) { return this._client('PUT', `/notifications/${notificationId(id)}/unread`); }
  delete(id) { return this._client('DELETE', `/notifications/${notificationId(id)}`); }

  /** Mark every notification (of one category) read: {status: "read", updated}. */
  markAllRead({ category } = {}) {
    const q = category ? `?${new URLSearchParams({ category: String(category) })}` : '';
    return this._client('PUT', `/notifications/read${q}`);
  }

  /** How many notifications are unread (a number). */
  async unreadCount() {
    const data = await this._client('GET', '/notifications/unread-count');
    return data.unreadCount;
  }

  /** {mutedCategories: [slugs]} */
  async preferences() {
    const data = await this._client('GET', '/preferences');
    return { mutedCategories: data.mutedCategories };
  }

  /** Replace the muted categories; answers the stored preferences. */
  async setPreferences({ mutedCategories }) {
    if (!Array.isArray(mutedCategories)) throw new TypeError('setPreferences: mutedCategories must be an array');
    const data = await this._client('PUT', '/preferences', { mutedCategories });
    return { mutedCategories: data.mutedCategories };
  }

  // Topics: the routes of issue 13 (PUT/DELETE/GET /api/clients/{c}/topics…); a server
  // without them answers 404.
  follow(topic) { return this._client('PUT', `/topics/${encodeURIComponent(String(topic))}`); }
  unfollow(topic) { return this._client('DELETE', `/topics/${encodeURIComponent(String(topic))}`); }
  topics() { return this._client('GET', '/topics'); }

  /** The server's VAPID public key (base64url), or null when the server has Web Push off. */
  async vapidPublicKey() {
    try {
      const data = await this.request('GET', '/api/push/vapid-public-key');
      return (data && data.publicKey) || null;
    } catch (err) {
      if (err.status === 404) return null;
      throw err;
    }
  }

  pushSubscriptions() { return this._client('GET', '/push-subscriptions'); }
  addPushSubscription(subscription) { return this._client('POST', '/push-subscriptions', subscription); }
  removePushSubscription(id) { return this._client('DELETE', `/push-subscriptions/${notificationId(id)}`); }

  /** A single-use stream ticket: {ticket, expiresIn}. */
  streamTicket() { return this._client('POST', '/stream-tickets'); }

  /** The stream's URL for a ticket (never a JWT) and the cursor to resume after. */
  streamURL({ ticket, lastEventId, categories } = {}) {
    const q = new URLSearchParams();
    if (ticket) q.set('ticket', ticket);
    if (lastEventId != null) q.set('lastEventId', String(lastEventId));
    if (categories && categories.length) q.set('categories', categories.join(','));
    return `${this.server}${this._base}/notifications/stream?${q}`;
  }

  /**
   * Live events: {onNotification, onReadState, onReset, onStatus}; answers {close()}.
   * The tabs of this origin share one stream per server and client (see shared.js).
   */
  subscribe(handlers = {}) {
    return sharedStream(this).add(handlers);
  }
}
