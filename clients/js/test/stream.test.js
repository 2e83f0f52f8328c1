import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MercurioClient } from '../src/client.js';
import { backoffDelay } from '../src/stream.js';
import { fakeEventSourceClass, fakeFetch, json, jwt, until } from '../testing/fakes.js';

let clients = 0;

/** A client whose tickets are t1, t2, … and whose EventSources the test drives. */
function setup(streamAnswer = () => json(404, { error: 'not found' })) {
  const { FakeEventSource, opened } = fakeEventSourceClass();
  let tickets = 0;
  const { fetch, calls } = fakeFetch((url) => (url.endsWith('/stream-tickets')
    ? json(200, { ticket: `t${++tickets}`, expiresIn: 60 })
    : streamAnswer(url)));
  let n = 0;
  const client = new MercurioClient({
    server: 'https://notify.example',
    clientId: `c${++clients}`,
    token: async () => jwt({ user_id: 'x', n: ++n }),
    fetch,
    EventSource: FakeEventSource,
  });
  return { client, opened, calls };
}

function params(es) {
  return new URL(es.url).searchParams;
}

test('backoffDelay grows 1 s, 2 s, 4 s … to 15 s, with jitter between 60 % and 100 %', () => {
  assert.equal(backoffDelay(0, () => 1), 1000);
  assert.equal(backoffDelay(0, () => 0), 600);
  assert.equal(backoffDelay(2, () => 1), 4000);
  assert.equal(backoffDelay(20, () => 1), 15000);
});

test('subscribe opens an EventSource with a ticket and delivers typed events', async () => {
  const { client, opened } = setup();
  const seen = { notifications: [], readStates: [], resets: 0, statuses: [] };
  const sub = client.subscribe({
    onNotification: (n) => seen.notifications.push(n.notificationID),
    onReadState: (d) => seen.readStates.push(d),
    onReset: () => seen.resets++,
    onStatus: (s) => seen.statuses.push(s),
  });
  await until(() => opened.length === 1, 'the EventSource');
  const es = opened[0];
  assert.equal(params(es).get('ticket'), 't1');
  assert.equal(params(es).get('lastEventId'), null);
  assert.ok(![...params(es).keys()].some((k) => /token|jwt/.test(k)));
  es.open();
  es.message({ notificationID: 5, data: 'hi' }, 5);
  es.emit('read-state', { notificationID: 5, status: 'read', category: null, unreadCount: 0 });
  es.emit('reset', {});
  assert.deepEqual(seen.notifications, [5]);
  assert.equal(seen.readStates[0].status, 'read');
  assert.equal(seen.resets, 1);
  assert.deepEqual(seen.statuses, ['connecting', 'live']);
  sub.close();
  assert.ok(es.closed);
});

test('after an error: a NEW ticket and lastEventId = the newest notification seen', async () => {
  const { client, opened } = setup();
  const statuses = [];
  const sub = client.subscribe({ lastEventId: 3, onStatus: (s) => statuses.push(s) });
  await until(() => opened.length === 1);
  assert.equal(params(opened[0]).get('lastEventId'), '3');
  opened[0].open();
  opened[0].message({ notificationID: 8 }, 8);
  opened[0].fail();
  assert.ok(opened[0].closed, 'the spent EventSource must not retry on its own');
  assert.equal(statuses.at(-1), 'reconnecting');
  await until(() => opened.length === 2, 'the reconnect', 600); // backoff: 0.6 to 1 s
  assert.equal(params(opened[1]).get('ticket'), 't2');
  assert.equal(params(opened[1]).get('lastEventId'), '8');
  sub.close();
});

test('token-expired: the token function is called again and the stream resumes after its lastEventId', async () => {
  const { client, opened } = setup();
  const sub = client.subscribe({});
  await until(() => opened.length === 1);
  const callsBefore = client.tokens.calls;
  opened[0].open();
  opened[0].emit('token-expired', { lastEventId: 41 });
  await until(() => opened.length === 2, 'the resumed stream');
  assert.equal(client.tokens.calls, callsBefore + 1);
  assert.equal(params(opened[1]).get('lastEventId'), '41');
  assert.ok(opened[0].closed);
  sub.close();
});

test('subscribers of one client in one tab share one stream; the last close ends it', async () => {
  const { client, opened } = setup();
  const a = [];
  const b = [];
  const subA = client.subscribe({ onNotification: (n) => a.push(n.notificationID) });
  const subB = client.subscribe({ onNotification: (n) => b.push(n.notificationID) });
  await until(() => opened.length === 1);
  opened[0].open();
  opened[0].message({ notificationID: 1 }, 1);
  subA.close();
  opened[0].message({ notificationID: 2 }, 2);
  assert.deepEqual(a, [1]);
  assert.deepEqual(b, [1, 2]);
  assert.equal(opened.length, 1);
  assert.ok(!opened[0].closed);
  subB.close();
  assert.ok(opened[0].closed);
});

test('a throwing subscriber neither stops the stream nor the other subscribers', async () => {
  const { client, opened } = setup();
  const got = [];
  const warn = console.warn;
  console.warn = () => {};
  try {
    const bad = client.subscribe({ onNotification: () => { throw new Error('bug'); } });
    const good = client.subscribe({ onNotification: (n) => got.push(n.notificationID) });
    await until(() => opened.length === 1);
    opened[0].message({ notificationID: 7 }, 7);
    opened[0].message({ notificationID: 8 }, 8);
    assert.deepEqual(got, [7, 8]);
    bad.close();
    good.close();
  } finally {
    console.warn = warn;
  }
});

test('a stream refused before it opened is asked why with fetch: 429 is said in words', async () => {
  const { client, opened, calls } = setup(() => json(429, { error: 'too many open streams: at most 10 per client' }));
  const seen = [];
  const sub = client.subscribe({ onStatus: (s, detail) => seen.push([s, detail && detail.error]) });
  await until(() => opened.length === 1);
  opened[0].fail();
  await until(() => seen.some(([s, e]) => s === 'reconnecting' && e), 'the refusal');
  const [, error] = seen.find(([s, e]) => s === 'reconnecting' && e);
  assert.equal(error.status, 429);
  assert.equal(error.message, 'too many open streams: at most 10 per client');
  const probe = calls.find((c) => c.url.includes('/notifications/stream'));
  assert.match(probe.headers.Authorization, /^Bearer /);
  assert.ok(!new URL(probe.url).searchParams.has('ticket'));
  sub.close();
});

test('a stream that was open and broke is not probed', async () => {
  const { client, opened, calls } = setup();
  const sub = client.subscribe({});
  await until(() => opened.length === 1);
  opened[0].open();
  opened[0].fail();
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(!calls.some((c) => c.url.includes('/notifications/stream')));
  sub.close();
});

test('the fetch transport sends the JWT in a header, never a ticket, and parses the frames', async () => {
  let push;
  const body = new ReadableStream({ start(c) { push = c; } });
  const { fetch, calls } = fakeFetch((url) => (url.includes('/notifications/stream')
    ? new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } })
    : json(404, { error: 'not found' })));
  const client = new MercurioClient({
    server: 'https://notify.example', clientId: `c${++clients}`, token: jwt({ user_id: 'x' }), fetch, transport: 'fetch',
  });
  const got = [];
  const states = [];
  const sub = client.subscribe({ onNotification: (n) => got.push(n), onStatus: (s) => states.push(s), lastEventId: 4 });
  await until(() => states.includes('live'), 'live');
  const enc = new TextEncoder();
  push.enqueue(enc.encode(': heartbeat\n\nid: 5\ndata: {"notificationID": 5, "da'));
  push.enqueue(enc.encode('ta": "hi"}\n\n'));
  await until(() => got.length === 1, 'the notification');
  assert.equal(got[0].data, 'hi');
  const stream = calls.find((c) => c.url.includes('/notifications/stream'));
  assert.match(stream.headers.Authorization, /^Bearer /);
  assert.equal(new URL(stream.url).searchParams.get('ticket'), null);
  assert.equal(new URL(stream.url).searchParams.get('lastEventId'), '4');
  assert.ok(!calls.some((c) => c.url.endsWith('/stream-tickets')), 'no ticket for the fetch transport');
  sub.close();
});

test('the fetch transport says why the server refused the stream', async () => {
  const { fetch } = fakeFetch(() => json(429, { error: 'too many open streams: at most 10 per client' }));
  const client = new MercurioClient({ clientId: `c${++clients}`, token: jwt({ user_id: 'x' }), fetch, transport: 'fetch' });
  const errors = [];
  const sub = client.subscribe({ onStatus: (s, d) => { if (d && d.error) errors.push(d.error); } });
  await until(() => errors.length > 0, 'the refusal');
  assert.equal(errors[0].status, 429);
  assert.match(errors[0].message, /too many open streams/);
  sub.close();
  assert.throws(() => new MercurioClient({ clientId: 'x', token: 't', transport: 'websocket' }), TypeError);
});
