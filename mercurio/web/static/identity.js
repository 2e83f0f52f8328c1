// Who am I? (first match wins)
//   1. window.MERCURIO_TOKEN — set by an embedding page before the app loads — or a
//      `#token=<jwt>` URL fragment (removed from the address bar once read). The user id is the
//      token's `user_id` (or `sub`) claim. To let the app renew an expiring token, the embedder
//      may also set `window.MERCURIO_TOKEN_PROVIDER = async () => "<new jwt>"`.
//   2. `?user=<id>` — development flow: the token comes from POST /api/dev/token (only served
//      when MERCURIO_ENV is development or test) and is renewed the same way. A page the
//      service worker opened for a click on a desktop notification (?read=<n>&client=<id>,
//      see desktop.js) names its user as `client`, taken the same way.
//   3. Neither: resolveIdentity() returns null and the page asks which user to open.

import { MercurioError, MercurioNetworkError } from '/sdk/errors.js';
import { jwtClaims } from '/sdk/token.js';

/** A development token (POST /api/dev/token; a 404 in production, where it is not issued). */
export async function devToken(userID, publisher = false) {
  let response;
  try {
    response = await fetch('/api/dev/token', {
      method: 'POST',
      headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
      body: JSON.stringify({ userID: String(userID), publisher }),
    });
  } catch (err) {
    throw new MercurioNetworkError(`could not reach the server: ${(err && err.message) || err}`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const text = (data && typeof data.error === 'string' && data.error) || `HTTP ${response.status}`;
    throw new MercurioError(response.status, text, data);
  }
  return data.token;
}

/** What the SDK's TokenSource asks for tokens: the given one first, then the renewer's. */
export function tokenProvider({ token, renew }) {
  if (!token) return renew;
  if (!renew) return token; // fixed: a 401 is final
  let first = token;
  return async () => {
    if (first) { const t = first; first = null; return t; }
    return renew();
  };
}

/** {user, token, renew}, {error} for a token without a user, or null when nobody is named. */
export function resolveIdentity() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  let token = typeof window.MERCURIO_TOKEN === 'string' && window.MERCURIO_TOKEN ? window.MERCURIO_TOKEN : null;
  if (!token && fragment.get('token')) {
    token = fragment.get('token');
    history.replaceState(null, '', location.pathname + location.search);
  }
  if (token) {
    const claims = jwtClaims(token);
    const user = window.MERCURIO_USER || claims.user_id || claims.sub;
    if (!user) return { error: 'The token has no user_id claim.' };
    const provider = typeof window.MERCURIO_TOKEN_PROVIDER === 'function' ? () => window.MERCURIO_TOKEN_PROVIDER() : null;
    return { user: String(user), token, renew: provider };
  }
  const query = new URLSearchParams(location.search);
  const user = (query.get('user') || query.get('client') || '').trim();
  if (user) return { user, token: null, renew: () => devToken(user, false) };
  return null;
}
