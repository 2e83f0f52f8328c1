// The JWT an embedder hands us through an async `token()` function: kept while it is fresh,
// asked for again shortly before it expires (its `exp` claim: on a timer while a stream is
// live, else at the next call), after a 401 and after the stream said `token-expired`. Concurrent callers share one call of the provider.

import { MercurioError } from './errors.js';

// Renew this long before `exp`: a request sent with a token about to expire could land after it.
export const REFRESH_MARGIN_MS = 30_000;

/** The claims of a JWT, without checking it (the server does); {} when it is not one. */
export function jwtClaims(token) {
  try {
    const part = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(part.padEnd(Math.ceil(part.length / 4) * 4, '='));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return claims && typeof claims === 'object' ? claims : {};
  } catch {
    return {};
  }
}

/** When a token received at `now` must be renewed (ms since the epoch), or Infinity for one
 * without `exp`: the margin before exp, or, for a token living less than four margins, a
 * quarter of its life before exp (so a short token is not renewed again and again). */
export function renewAt(token, margin = REFRESH_MARGIN_MS, now = Date.now()) {
  const exp = jwtClaims(token).exp;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return Infinity;
  const left = Math.max(0, exp * 1000 - now);
  return exp * 1000 - Math.min(margin, left / 4);
}

export class TokenSource {
  /**
   * @param {(() => Promise<string>) | string} provider
   * @param {{now?: () => number, margin?: number}} [options]
   */
  constructor(provider, { now = () => Date.now(), margin = REFRESH_MARGIN_MS } = {}) {
    if (typeof provider === 'string') {
      const fixed = provider;
      provider = async () => fixed;
    }
    if (typeof provider !== 'function') {
      throw new TypeError('MercurioClient: `token` must be an async function returning a JWT');
    }
    this._provider = provider;
    this._now = now;
    this._margin = margin;
    this._token = null;
    this._renewAt = 0;
    this._pending = null;
    this._holders = 0;
    this._timer = null;
    this.calls = 0; // how many times the provider was asked: tests and debugging
  }

  /** Keep a fresh token at hand (asked for before expiry) while anyone holds it: a live
   * stream does, so that its reconnects and the REST calls never wait for the provider. */
  hold() {
    this._holders++;
    if (this._holders === 1 && this._token) this._schedule();
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this._holders === 0) { clearTimeout(this._timer); this._timer = null; }
    };
  }

  _schedule() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._holders === 0 || !Number.isFinite(this._renewAt)) return;
    const delay = Math.max(1000, this._renewAt - this._now());
    this._timer = setTimeout(() => {
      this._timer = null;
      this.refresh().catch(() => this._retryLater());
    }, delay);
    if (this._timer && typeof this._timer.unref === 'function') this._timer.unref();
  }

  _retryLater() {
    // the provider failed: try again in a while (the next request would anyway)
    if (this._holders === 0) return;
    this._timer = setTimeout(() => { this.refresh().catch(() => this._retryLater()); }, 5000);
    if (this._timer && typeof this._timer.unref === 'function') this._timer.unref();
  }

  /** A token fresh enough to send now. */
  async get() {
    if (this._token && this._now() < this._renewAt) return this._token;
    return this.refresh();
  }

  /** Ask the provider for a new token, whatever the one held (after a 401 or token-expired). */
  refresh() {
    if (!this._pending) {
      this._pending = (async () => {
        try {
          this.calls++;
          const token = await this._provider();
          if (typeof token !== 'string' || !token) {
            throw new MercurioError(401, 'the token function returned no token');
          }
          this._token = token;
          this._renewAt = renewAt(token, this._margin, this._now());
          this._schedule();
          return token;
        } finally {
          this._pending = null;
        }
      })();
    }
    return this._pending;
  }

  /** The user the current token names (`user_id`, else `sub`), or null. */
  get user() {
    const claims = this._token ? jwtClaims(this._token) : {};
    const user = claims.user_id ?? claims.sub;
    return user == null ? null : String(user);
  }
}
