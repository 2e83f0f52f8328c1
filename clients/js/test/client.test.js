import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MercurioClient, listQuery, normalizeServer, notificationId } from '../src/client.js';
import { MercurioError, MercurioNetworkError } from '../src/errors.js';
import { fakeFetch, json, jwt } from '../testing/fakes.js';

const SERVER = 'https://notify.example';

function clientWith(answer, tokens = [jwt({ user_id: '123', n: 1 }), jwt({ user_id: '123', n: 2 })]) {
  const { fetch, calls } = fakeFetch(answer);
  let i = 0;
  const client = new MercurioClient({
    server: `${SERVER}/`,
    clientId: '123',
    token: async () => tokens[Math.min(i++, tokens.length - 1)],
    fetch,
  });
  return { client, calls, tokens };
}

test('listQuery: status, limit, before and category, and bad input refused before any request', () => {
  assert.equal(listQuery(), 'status=all');
  assert.equal(listQuery({ status: 'unread', limit: 20, before: 57, category: 'billing' }),
    'status=unread&limit=20&before=57&category=billing');
  assert.throws(() => listQuery({ status: 'new' }), /status must be one of all, read, unread/);
  assert.throws(() => listQuery({ before: 'x' }), /positive integer/);
});

test('notificationId and normalizeServer refuse what would make a wrong URL', () => {
  assert.equal(notificationId(12), '12');
  for (const bad of [0, -1, 1.5, '1/../2', '', null]) assert.throws(() => notificationId(bad), TypeError);
  assert.equal(normalizeServer('https://a.example//'), 'https://a.example');
  assert.equal(normalizeServer(undefined), '');
  assert.throws(() => normalizeServer('javascript:alert(1)'), /http\(s\) URL/);
  assert.throws(() => new MercurioClient({ token: 'x' }), /clientId is required/);
});

test('list() sends the bearer token in a header, never in the URL, and answers the page', async () => {
  const { client, calls, tokens } = clientWith(() => json(200, {
    clientID: '123', notifications: [{ notificationID: 9 }], unreadCount: 4, nextBefore: 9,
  }));
  const page = await client.list({ status: 'unread', limit: 1 });
  assert.deepEqual(page, { notifications: [{ notificationID: 9 }], unreadCount: 4, nextBefore: 9 });
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, `${SERVER}/api/clients/123/notifications?status=unread&limit=1`);
  assert.equal(calls[0].headers.Authorization, `Bearer ${tokens[0]}`);
  assert.ok(!calls[0].url.includes(tokens[0]));
});

test('paging: the next page is asked for with before=nextBefore', async () => {
  const pages = [
    { notifications: [{ notificationID: 5 }, { notificationID: 4 }], unreadCount: 3, nextBefore: 4 },
    { notifications: [{ notificationID: 3 }], unreadCount: 3, nextBefore: null },
  ];
  const { client, calls } = clientWith((url, init, n) => json(200, pages[n - 1]));
  const first = await client.list({ limit: 2 });
  const second = await client.list({ limit: 2, before: first.nextBefore });
  assert.equal(second.nextBefore, null);
  assert.match(calls[1].url, /[?&]before=4(&|$)/);
});

test('a 401 asks the token function again and retries once with the new token', async () => {
  const { client, calls, tokens } = clientWith((url, init, n) => (n === 1 ? json(401, { error: 'token expired' }) : json(200, { clientID: '123', unreadCount: 7 })));
  assert.equal(await client.unreadCount(), 7);
  assert.deepEqual(calls.map((c) => c.headers.Authorization), [`Bearer ${tokens[0]}`, `Bearer ${tokens[1]}`]);
  assert.equal(client.tokens.calls, 2);
});

test('a second 401 is the caller\'s error, with the server\'s message', async () => {
  const { client, calls } = clientWith(() => json(401, { error: 'invalid token' }));
  await assert.rejects(client.markRead(3), (err) => err instanceof MercurioError && err.status === 401 && err.message === 'invalid token');
  assert.equal(calls.length, 2);
});

test('errors carry the status and {"error"} text; an unreachable server is a MercurioNetworkError', async () => {
  const { client } = clientWith(() => json(404, { error: 'notification not found' }));
  await assert.rejects(client.get(99), { name: 'MercurioError', status: 404, message: 'notification not found' });
  const down = clientWith(() => { throw new TypeError('fetch failed'); }).client;
  await assert.rejects(down.list(), (err) => err instanceof MercurioNetworkError && err.network === true && /could not reach/.test(err.message));
});

test('each call goes to its route with its method', async () => {
  const { client, calls } = clientWith(() => json(200, { mutedCategories: ['ads'] }));
  await client.markRead(1);
  await client.markUnread(2);
  await client.markAllRead();
  await client.markAllRead({ category: 'billing' });
  await client.delete(3);
  await client.preferences();
  await client.setPreferences({ mutedCategories: ['ads'] });
  await client.follow('deploys/web');
  await client.unfollow('deploys');
  await client.topics();
  await client.streamTicket();
  const base = `${SERVER}/api/clients/123`;
  assert.deepEqual(calls.map((c) => `${c.method} ${c.url}`), [
    `PUT ${base}/notifications/1/read`,
    `PUT ${base}/notifications/2/unread`,
    `PUT ${base}/notifications/read`,
    `PUT ${base}/notifications/read?category=billing`,
    `DELETE ${base}/notifications/3`,
    `GET ${base}/preferences`,
    `PUT ${base}/preferences`,
    `PUT ${base}/topics/deploys%2Fweb`,
    `DELETE ${base}/topics/deploys`,
    `GET ${base}/topics`,
    `POST ${base}/stream-tickets`,
  ]);
  assert.equal(calls[6].body, JSON.stringify({ mutedCategories: ['ads'] }));
  assert.equal(calls[6].headers['Content-Type'], 'application/json');
  await assert.rejects(client.setPreferences({ mutedCategories: 'ads' }), TypeError);
});

test('vapidPublicKey() is null when the server has Web Push off (404)', async () => {
  assert.equal(await clientWith(() => json(404, { error: 'web push is off' })).client.vapidPublicKey(), null);
  assert.equal(await clientWith(() => json(200, { publicKey: 'BAbc' })).client.vapidPublicKey(), 'BAbc');
  await assert.rejects(clientWith(() => json(500, { error: 'boom' })).client.vapidPublicKey(), { status: 500 });
});

test('streamURL carries the ticket and the cursor, never a token', () => {
  const { client } = clientWith(() => json(200, {}));
  const url = client.streamURL({ ticket: 't1', lastEventId: 42, categories: ['a', 'b'] });
  assert.equal(url, `${SERVER}/api/clients/123/notifications/stream?ticket=t1&lastEventId=42&categories=a%2Cb`);
});
