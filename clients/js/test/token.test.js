import { test } from 'node:test';
import assert from 'node:assert/strict';

import { REFRESH_MARGIN_MS, TokenSource, jwtClaims, renewAt } from '../src/token.js';
import { jwt, until } from '../testing/fakes.js';

test('jwtClaims reads the payload and gives {} for anything else', () => {
  assert.deepEqual(jwtClaims(jwt({ user_id: '123', exp: 10 })), { user_id: '123', exp: 10 });
  assert.deepEqual(jwtClaims('not a jwt'), {});
  assert.deepEqual(jwtClaims(undefined), {});
});

test('renewAt: the margin before exp, a quarter of the life of a short token, or never', () => {
  assert.equal(renewAt(jwt({ exp: 3600 }), REFRESH_MARGIN_MS, 0), 3600_000 - REFRESH_MARGIN_MS);
  assert.equal(renewAt(jwt({ exp: 110 }), REFRESH_MARGIN_MS, 100_000), 107_500);
  assert.equal(renewAt(jwt({ exp: 10 }), REFRESH_MARGIN_MS, 20_000), 10_000); // already expired
  assert.equal(renewAt(jwt({ user_id: 'x' })), Infinity);
});

test('a fresh token is reused; one near its exp is asked for again', async () => {
  let now = 0;
  let n = 0;
  const source = new TokenSource(async () => jwt({ n: ++n, iat: 0, exp: 3600 }), { now: () => now });
  const first = await source.get();
  assert.equal(await source.get(), first);
  now = 3600_000 - REFRESH_MARGIN_MS - 1;
  assert.equal(await source.get(), first);
  assert.equal(source.calls, 1);
  now += 2;
  const second = await source.get();
  assert.notEqual(second, first);
  assert.equal(jwtClaims(second).n, 2);
  assert.equal(source.calls, 2);
});

test('concurrent refreshes share one call of the provider', async () => {
  let calls = 0;
  let release;
  const gate = new Promise((r) => { release = r; });
  const source = new TokenSource(async () => { calls++; await gate; return jwt({ user_id: '1' }); });
  const all = Promise.all([source.get(), source.refresh(), source.get()]);
  release();
  const tokens = await all;
  assert.equal(calls, 1);
  assert.equal(new Set(tokens).size, 1);
  assert.equal(source.user, '1');
});

test('refresh() always asks again, even for a token without exp', async () => {
  let n = 0;
  const source = new TokenSource(async () => jwt({ n: ++n }));
  await source.get();
  await source.get();
  assert.equal(source.calls, 1);
  await source.refresh();
  assert.equal(source.calls, 2);
});

test('a provider returning no token is an error; a non-function is refused up front', async () => {
  const source = new TokenSource(async () => '');
  await assert.rejects(source.get(), /returned no token/);
  assert.throws(() => new TokenSource(42), /must be an async function/);
  assert.equal(await new TokenSource('fixed').get(), 'fixed');
});

test('while held, the token is renewed before its exp without anyone asking', async () => {
  const now = () => Date.now();
  let n = 0;
  const source = new TokenSource(async () => {
    n++;
    const t = Math.floor(Date.now() / 1000);
    return jwt({ n, iat: t, exp: t + 2 }); // renewed a quarter of its life early: about 1.5 s
  }, { now });
  const release = source.hold();
  await source.get();
  await until(() => source.calls >= 2, 'the renewal before exp', 800);
  assert.equal(jwtClaims(await source.get()).n, n);
  release();
  const calls = source.calls;
  await new Promise((r) => setTimeout(r, 1300));
  assert.equal(source.calls, calls, 'no renewal once nobody holds it');
});
