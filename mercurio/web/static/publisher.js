// The publisher console: unicast, broadcast (comma-separated list) and announce, with a
// category and the message as text or JSON. Uses a publisher token: window.MERCURIO_PUBLISHER_TOKEN
// if the embedder gives one, otherwise a development token for publisher "666"
// (POST /api/dev/token, only in MERCURIO_ENV development/test: in production the console says
// it has no token instead of claiming one). Tokens are kept and renewed by the SDK's TokenSource.

import { TokenSource } from '/sdk/token.js';
import { devToken } from './identity.js';

const SLUG = /^[a-z0-9_-]{1,32}$/;
const PUBLISHER_ID = '666';
const NO_TOKEN = 'Not signed in: this server issues no token to the page (it runs in production). '
  + 'An embedding page gives the console one as window.MERCURIO_PUBLISHER_TOKEN.';

const $ = (sel) => document.querySelector(sel);

class Offline extends Error {}

/** POST with the publisher token; the answer whatever its status ({status, ok, data}). */
async function post(tokens, path, body) {
  for (let attempt = 0; ; attempt++) {
    const token = attempt === 0 ? await tokens.get() : await tokens.refresh();
    let response;
    try {
      response = await fetch(path, {
        method: 'POST',
        headers: { Accept: 'application/json', 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
    } catch {
      throw new Offline(navigator.onLine === false
        ? 'You are offline: nothing was sent.'
        : 'The server could not be reached: nothing was sent.');
    }
    if (response.status === 401 && attempt === 0) continue; // maybe just expired: renew once
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    return { status: response.status, ok: response.ok, data };
  }
}

/** Say who the console publishes as, once that is known (never a token it does not have). */
async function signIn(tokens, given, sub, send) {
  if (given) { sub.textContent = 'Signed in with the embedder\'s publisher token.'; return; }
  sub.textContent = `Signing in as publisher ${PUBLISHER_ID}…`;
  try {
    await tokens.get();
    sub.textContent = `Signed in as publisher ${PUBLISHER_ID} (development token).`;
  } catch (err) {
    if (err.status === 404) {
      sub.textContent = NO_TOKEN;
      send.disabled = true;
    } else {
      sub.textContent = `Not signed in yet: ${err.message}. Sending tries again.`;
    }
  }
}

export function initPublisher() {
  const form = $('#pub-form');
  const dest = $('#pub-dest');
  const destField = $('#dest-field');
  const destLabel = $('#pub-dest-label');
  const destHint = $('#pub-dest-hint');
  const category = $('#pub-category');
  const source = $('#pub-source');
  const data = $('#pub-data');
  const asJSON = $('#pub-json');
  const dataError = $('#pub-data-error');
  const send = $('#pub-send');
  const status = $('#pub-status');
  const output = $('#pub-output');
  const sub = $('#pub-sub');

  const given = typeof window.MERCURIO_PUBLISHER_TOKEN === 'string' && window.MERCURIO_PUBLISHER_TOKEN
    ? window.MERCURIO_PUBLISHER_TOKEN : null;
  const tokens = new TokenSource(given || (() => devToken(PUBLISHER_ID, true)));
  signIn(tokens, given, sub, send);

  /** A send that did not happen or failed: the last answer must not still be shown as current. */
  function showFailure(first, detail) {
    output.classList.add('output-error');
    output.textContent = detail ? `${first}\n${detail}` : first;
  }

  const mode = () => form.querySelector('input[name="mode"]:checked').value;

  function syncMode() {
    const m = mode();
    destField.hidden = m === 'announce';
    if (m === 'unicast') {
      destLabel.textContent = 'Recipient user id';
      destHint.textContent = 'A single user id.';
      dest.placeholder = '123';
    } else if (m === 'broadcast') {
      destLabel.textContent = 'Recipient user ids';
      destHint.textContent = 'Comma-separated, e.g. 123, 456.';
      dest.placeholder = '123, 456';
    }
    send.textContent = m === 'announce' ? 'Announce to everyone' : 'Send';
  }
  form.addEventListener('change', (e) => { if (e.target.name === 'mode') syncMode(); });
  syncMode();

  function fieldError(input, message) {
    input.setAttribute('aria-invalid', message ? 'true' : 'false');
    if (input === data) {
      dataError.textContent = message || '';
      dataError.hidden = !message;
    }
  }

  function readData() {
    const text = data.value;
    if (!asJSON.checked) {
      if (!text.trim()) throw Object.assign(new Error('Write a message.'), { field: data });
      return text;
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw Object.assign(new Error(`Invalid JSON: ${err.message}`), { field: data });
    }
  }

  asJSON.addEventListener('change', () => {
    data.placeholder = asJSON.checked ? '{"title": "Order shipped", "body": "It arrives Tuesday"}' : 'Your order has shipped';
    fieldError(data, null);
  });
  data.addEventListener('input', () => fieldError(data, null));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const m = mode();
    let payload;
    try {
      const body = { sourceID: source.value.trim(), data: readData() };
      if (!body.sourceID) throw Object.assign(new Error('A source id is needed.'), { field: source });
      const cat = category.value.trim();
      if (cat) {
        if (!SLUG.test(cat)) throw Object.assign(new Error('A category is 1–32 lowercase letters, digits, - or _.'), { field: category });
        body.category = cat;
      }
      if (m === 'unicast') {
        const id = dest.value.trim();
        if (!id) throw Object.assign(new Error('Give a recipient.'), { field: dest });
        body.destinationID = id;
      } else if (m === 'broadcast') {
        const ids = dest.value.split(',').map((s) => s.trim()).filter(Boolean);
        if (!ids.length) throw Object.assign(new Error('Give at least one recipient.'), { field: dest });
        body.destinations = ids;
      }
      payload = body;
    } catch (err) {
      if (err.field) {
        fieldError(err.field, err.message);
        status.textContent = err.field === data ? 'Not sent.' : `Not sent: ${err.message}`;
        showFailure('Not sent', err.message);
        err.field.focus();
        return;
      }
      throw err;
    }
    for (const input of [dest, category, source]) input.removeAttribute('aria-invalid');
    fieldError(data, null);

    send.disabled = true;
    status.textContent = 'Sending…';
    output.classList.remove('output-error');
    output.textContent = 'Sending…';
    const path = `/api/events/${m}`;
    try {
      const res = await post(tokens, path, payload);
      output.classList.toggle('output-error', !res.ok);
      output.textContent = `POST ${path} → ${res.status}\n${JSON.stringify(res.data, null, 2)}`;
      status.textContent = res.ok ? 'Sent.' : `Failed (${res.status}).`;
    } catch (err) {
      const offline = err instanceof Offline;
      const reason = offline ? err.message : `${err.status ? `${err.status} ` : ''}${err.message}`;
      showFailure(`POST ${path} failed`, reason);
      status.textContent = offline ? err.message : 'Failed.';
    } finally {
      send.disabled = false;
    }
  });
}
