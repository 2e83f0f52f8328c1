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

import { devToken } from './api.js';

function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(part.padEnd(Math.ceil(part.length / 4) * 4, '='));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return {};
  }
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
