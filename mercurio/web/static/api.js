// Small REST client for the Mercurio HTTP API (docs/API.md).
// Every call carries `Authorization: Bearer <jwt>`; a 401 triggers one token refresh and a retry.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

/** The request never reached the server (offline, DNS, connection refused): worth retrying quietly. */
export class NetworkError extends Error {
  constructor(message) {
    super(message);
    this.name = 'NetworkError';
    this.network = true;
  }
}

/** fetch(), with a failure to reach the server told apart from an answer that is an error. */
async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new NetworkError(err && typeof err.message === 'string' ? err.message : 'network error');
  }
}

/** The server's {"error": "..."} text, or the status when the body has none. */
function errorMessage(data, status) {
  return (data && typeof data === 'object' && typeof data.error === 'string' && data.error) || `HTTP ${status}`;
}

export class Auth {
  /**
   * @param {() => Promise<string>|null} renew  returns a fresh token, or null when the token
   *   cannot be renewed (an embedder gave a fixed token and no provider).
   */
  constructor(token, renew) {
    this.token = token;
    this._renew = renew;
    this._pending = null;
  }

  get canRenew() { return typeof this._renew === 'function'; }

  /** Get a fresh token; concurrent callers share one request. */
  async refresh() {
    if (!this.canRenew) throw new ApiError(401, 'the token expired and cannot be renewed');
    if (!this._pending) {
      this._pending = (async () => {
        try {
          this.token = await this._renew();
          return this.token;
        } finally {
          this._pending = null;
        }
      })();
    }
    return this._pending;
  }

  header() { return { Authorization: `Bearer ${this.token}` }; }
}

async function parseBody(response) {
  const text = await response.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

/** Fetch JSON without auth (dev token, health). */
export async function fetchJSON(url, { method = 'GET', body, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await send(url, init);
  const data = await parseBody(response);
  if (!response.ok) {
    const message = errorMessage(data, response.status);
    throw new ApiError(response.status, message, data);
  }
  return data;
}

export async function devToken(userID, publisher = false) {
  const data = await fetchJSON('/api/dev/token', { method: 'POST', body: { userID: String(userID), publisher } });
  return data.token;
}

export class Api {
  constructor(auth) { this.auth = auth; }

  async request(method, path, body, { raw = false } = {}) {
    for (let attempt = 0; ; attempt++) {
      const init = { method, headers: { Accept: 'application/json', ...this.auth.header() } };
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const response = await send(path, init);
      if (response.status === 401 && attempt === 0 && this.auth.canRenew) {
        await this.auth.refresh();
        continue;
      }
      const data = await parseBody(response);
      if (raw) return { status: response.status, ok: response.ok, data };
      if (!response.ok) {
        const message = errorMessage(data, response.status);
        throw new ApiError(response.status, message, data);
      }
      return data;
    }
  }
}

/** The per-client routes. */
export class ClientApi extends Api {
  constructor(auth, clientID) {
    super(auth);
    this.clientID = clientID;
    this.base = `/api/clients/${encodeURIComponent(clientID)}`;
  }

  list({ status = 'all', limit = 50, before, category } = {}) {
    const q = new URLSearchParams({ status, limit: String(limit) });
    if (before != null) q.set('before', String(before));
    if (category) q.set('category', category);
    return this.request('GET', `${this.base}/notifications?${q}`);
  }
  unreadCount() { return this.request('GET', `${this.base}/notifications/unread-count`); }
  markRead(id) { return this.request('PUT', `${this.base}/notifications/${id}/read`); }
  markUnread(id) { return this.request('PUT', `${this.base}/notifications/${id}/unread`); }
  markAllRead(category) {
    const q = category ? `?category=${encodeURIComponent(category)}` : '';
    return this.request('PUT', `${this.base}/notifications/read${q}`);
  }
  remove(id) { return this.request('DELETE', `${this.base}/notifications/${id}`); }
  preferences() { return this.request('GET', `${this.base}/preferences`); }
  /** A change in the GET's shape (fields left out stay); an array is the muted categories. */
  setPreferences(change) {
    const body = Array.isArray(change) ? { mutedCategories: change } : change;
    return this.request('PUT', `${this.base}/preferences`, body);
  }
  vapidPublicKey() { return this.request('GET', '/api/push/vapid-public-key'); }
  pushSubscriptions() { return this.request('GET', `${this.base}/push-subscriptions`); }
  addPushSubscription(subscription) {
    return this.request('POST', `${this.base}/push-subscriptions`, subscription);
  }
  removePushSubscription(id) { return this.request('DELETE', `${this.base}/push-subscriptions/${id}`); }
  streamTicket() { return this.request('POST', `${this.base}/stream-tickets`); }
  streamURL() { return `${this.base}/notifications/stream`; }
}
