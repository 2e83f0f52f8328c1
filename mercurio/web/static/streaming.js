// The live stream for the signed-in user, from the SDK: MercurioClient.subscribe() shares one
// stream among the tabs of this origin (Web Locks elect a leader, BroadcastChannel relays; see
// /sdk/shared.js) and renews tickets and tokens. This module only hands its events to
// events.js and its state to the header, saying in words why the server refused a stream.

import { sharedStream } from '/sdk/shared.js';
import { state, session } from './state.js';
import { setConn } from './header.js';
import { handleStreamEvent } from './events.js';
import { ui } from './dom.js';

export const transport = new URLSearchParams(location.search).get('transport') === 'fetch' ? 'fetch' : 'eventsource';

let subscription = null;
let shared = null;

/** Why the stream is refused, in words, or '' while it is merely away (or live). */
function refusal(detail) {
  const err = detail && detail.error;
  if (!err || !err.status) return '';
  if (err.status === 429) {
    return `Stream limit reached: ${err.message}. Close this user's inbox in another tab, browser or app; this page keeps trying.`;
  }
  return `The server refused the live stream: ${err.message}.`;
}

function onStatus(status, detail) {
  const why = refusal(detail);
  ui.streamStatus.textContent = why;
  ui.streamStatus.hidden = !why;
  if (why) { setConn(detail.error.status === 429 ? 'limit' : 'error'); return; }
  setConn(status === 'closed' ? 'offline' : status);
}

export function startStreaming() {
  setConn('connecting');
  shared = sharedStream(session.api);
  subscription = session.api.subscribe({
    lastEventId: state.lastEventId,
    onNotification: (n) => handleStreamEvent('message', n),
    onReadState: (d) => handleStreamEvent('read-state', d),
    onReset: () => handleStreamEvent('reset'),
    onStatus,
  });
}

/** For window.__mercurio: does this tab hold the stream, and how often did it open. */
export function streamInfo() {
  return {
    isLeader: !!(shared && shared.isLeader),
    opens: shared && shared.conn ? shared.conn.opens : 0,
  };
}

/** Give up the stream (and the leadership) when the page goes; reload when it comes back. */
export function wirePageLifecycle() {
  window.addEventListener('pagehide', (e) => {
    if (e.persisted) return;
    if (subscription) { subscription.close(); subscription = null; }
  });
  window.addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });
}
