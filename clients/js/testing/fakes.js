// Test doubles for the SDK's unit tests: a fetch that records requests and answers from a
// script, a JWT maker, and an EventSource stand-in the tests drive by hand.

export function jwt(claims) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}.signature`;
}

export function json(status, body) {
  return new Response(body === undefined ? '' : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

/** fetch(): records every call; `answer(url, init, n)` gives the Response (or throws). */
export function fakeFetch(answer) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    calls.push({ url: String(url), method: init.method || 'GET', headers: init.headers || {}, body: init.body });
    return answer(String(url), init, calls.length);
  };
  return { fetch, calls };
}

/** An EventSource the test opens, feeds and breaks; every instance is kept in `opened`. */
export function fakeEventSourceClass() {
  const opened = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.closed = false;
      this.listeners = {};
      opened.push(this);
    }
    addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
    close() { this.closed = true; }
    open() {
      for (const fn of this.listeners.open || []) fn({});
      this.onopen && this.onopen({});
    }
    message(data, id) { this.onmessage && this.onmessage({ data: JSON.stringify(data), lastEventId: String(id ?? '') }); }
    emit(type, data) { for (const fn of this.listeners[type] || []) fn({ data: JSON.stringify(data), lastEventId: '' }); }
    fail() { this.onerror && this.onerror({}); }
  }
  return { FakeEventSource, opened };
}

/** Wait until check() is true (microtasks and short timers), or fail. */
export async function until(check, what = 'condition', tries = 200) {
  for (let i = 0; i < tries; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}
