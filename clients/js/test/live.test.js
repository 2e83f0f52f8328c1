// The client against a real Mercurio server: MERCURIO_TEST_URL (in development or test mode,
// for its /api/dev/token). tests/test_sdk.py starts one and runs these; without it they skip.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MercurioClient, MercurioError } from '../src/mercurio.js';
import { NodeEventSource } from '../testing/node-eventsource.js';
import { until } from '../testing/fakes.js';

const SERVER = process.env.MERCURIO_TEST_URL;
const skip = SERVER ? false : 'MERCURIO_TEST_URL is not set';

async function devToken(userID, publisher = false) {
  const r = await fetch(`${SERVER}/api/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ userID, publisher }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).token;
}

async function publish(destinationID, data, category) {
  const r = await fetch(`${SERVER}/api/events/unicast`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${await devToken('666', true)}` },
    body: JSON.stringify({ sourceID: 'node-tests', destinationID, data, ...(category ? { category } : {}) }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  return (await r.json()).notificationID;
}

function newUser() {
  return `js${Math.random().toString(36).slice(2, 10)}`;
}

function clientFor(user) {
  return new MercurioClient({ server: SERVER, clientId: user, token: () => devToken(user), EventSource: NodeEventSource });
}

test('the inbox calls against the server', { skip }, async () => {
  const user = newUser();
  const client = clientFor(user);
  assert.deepEqual(await client.list(), { notifications: [], unreadCount: 0, nextBefore: null });
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push(await publish(user, `message ${i}`, i === 0 ? 'billing' : undefined));
  assert.equal(await client.unreadCount(), 3);

  const first = await client.list({ limit: 2 });
  assert.deepEqual(first.notifications.map((n) => n.notificationID), [ids[2], ids[1]]);
  assert.equal(first.unreadCount, 3);
  const second = await client.list({ limit: 2, before: first.nextBefore });
  assert.deepEqual(second.notifications.map((n) => n.notificationID), [ids[0]]);
  assert.equal(second.nextBefore, null);

  assert.deepEqual(await client.markRead(ids[2]), { status: 'read' });
  assert.ok((await client.get(ids[2])).readAt);
  assert.deepEqual((await client.list({ status: 'unread' })).notifications.map((n) => n.notificationID), [ids[1], ids[0]]);
  await client.markUnread(ids[2]);
  assert.equal(await client.unreadCount(), 3);
  assert.deepEqual(await client.markAllRead({ category: 'billing' }), { status: 'read', updated: 1 });
  assert.equal(await client.unreadCount(), 2);
  assert.deepEqual(await client.delete(ids[1]), { status: 'deleted' });
  await assert.rejects(client.get(ids[1]), (err) => err instanceof MercurioError && err.status === 404);
  await client.markAllRead();
  assert.equal(await client.unreadCount(), 0);

  assert.deepEqual(await client.setPreferences({ mutedCategories: ['ads'] }), { mutedCategories: ['ads'] });
  assert.deepEqual(await client.preferences(), { mutedCategories: ['ads'] });
  await assert.rejects(client.setPreferences({ mutedCategories: ['Not A Slug'] }), (err) => err.status >= 400 && err.status < 500);
  assert.deepEqual(await client.preferences(), { mutedCategories: ['ads'] });
});

test('bad input gets the server\'s clear error', { skip }, async () => {
  const client = clientFor(newUser());
  await assert.rejects(client.list({ limit: 0 }), (err) => err.status === 400 && /limit/.test(err.message));
  await assert.rejects(client.list({ category: 'Bad Category' }), (err) => err.status >= 400 && err.status < 500);
  const other = new MercurioClient({ server: SERVER, clientId: 'someone-else', token: () => devToken('not-them') });
  await assert.rejects(other.list(), (err) => err.status === 403 || err.status === 404);
});

test('topics: follow, list, a topic publish in the list, unfollow', { skip }, async () => {
  const user = newUser();
  const client = clientFor(user);
  const topic = `deploys-${user.toLowerCase()}`.slice(0, 64);
  assert.deepEqual(await client.follow(topic), { clientID: user, topic, status: 'subscribed' });
  assert.deepEqual((await client.topics()).topics, [topic]);
  const r = await fetch(`${SERVER}/api/events/topic`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${await devToken('666', true)}` },
    body: JSON.stringify({ sourceID: 'node-tests', topic, data: 'shipped' }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  const { notifications } = await client.list();
  assert.deepEqual(notifications.map((n) => [n.data, n.topic]), [['shipped', topic]]);
  assert.equal((await client.unfollow(topic)).status, 'unsubscribed');
  await assert.rejects(client.unfollow(topic), (err) => err instanceof MercurioError && err.status === 404);
  await assert.rejects(client.follow('Not A Slug'), (err) => err.status === 400);
});

test('subscribe: a ticket-authenticated stream delivers notifications and read states', { skip }, async () => {
  const user = newUser();
  const client = clientFor(user);
  const got = [];
  const states = [];
  const statuses = [];
  const sub = client.subscribe({
    onNotification: (n) => got.push(n),
    onReadState: (d) => states.push(d),
    onStatus: (s) => statuses.push(s),
  });
  try {
    await until(() => statuses.includes('live'), 'a live stream', 1000);
    const id = await publish(user, { title: 'Hello', body: 'from node' }, 'news');
    await until(() => got.length === 1, 'the notification', 1000);
    assert.equal(got[0].notificationID, id);
    assert.equal(got[0].category, 'news');
    assert.deepEqual(got[0].data, { title: 'Hello', body: 'from node' });
    await client.markRead(id);
    await until(() => states.length === 1, 'the read-state event', 1000);
    assert.deepEqual(states[0], { notificationID: id, status: 'read', category: 'news', unreadCount: 0 });
  } finally {
    sub.close();
  }
});
