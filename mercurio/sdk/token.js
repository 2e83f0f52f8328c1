// The JWT an embedder hands us through an async `token()` function: kept while it is fresh,
// asked for again shortly before it expires (its `exp` claim), after a 401 and after the
// stream said `token-expired`. Concurrent callers share one call of the provider.

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

/** When a token must be renewed (ms since the epoch), or Infinity for one without `exp`. */
export function renewAt(token, margin = REFRESH_MARGIN_MS) {
  const exp = jwtClaims(token).exp;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return Infinity;
  // A token living less than twice the margin is renewed at half its remaining life instead.
  const iat = jwtClaims(token).iat;
  const life = typeof iat === 'number' ? (exp - iat) * 1000 : Infinity;
  return exp * 1000 - Math.min(margin, life / 2);
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
    this.calls = 0; // how many times the provider was asked: tests and debugging
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
          this._renewAt = renewAt(token, this._margin);
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
