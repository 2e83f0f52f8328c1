// The live stream for the signed-in user: the tabs of one user elect a leader (tabs.js), the
// leader holds the one stream (stream.js) and relays its events and connection state to the
// other tabs, which only listen.

import { state, session } from './state.js';
import { StreamConnection } from './stream.js';
import { TabCoordinator } from './tabs.js';
import { setConn } from './header.js';
import { handleStreamEvent } from './events.js';

export const transport = new URLSearchParams(location.search).get('transport') === 'fetch' ? 'fetch' : 'eventsource';

function lead(coordinator) {
  state.isLeader = true;
  session.stream = new StreamConnection({
    api: session.api,
    transport,
    getLastEventId: () => state.lastEventId,
    onEvent: (type, data) => {
      handleStreamEvent(type, data);
      coordinator.post({ type: 'event', event: type, data });
    },
    onState: (s) => {
      setConn(s);
      coordinator.post({ type: 'state', state: s });
    },
  });
  session.stream.start();
}

function follow(coordinator, msg) {
  if (msg.type === 'hello') {
    if (state.isLeader) coordinator.post({ type: 'state', state: state.conn });
  } else if (state.isLeader) {
    // only followers take relayed events
  } else if (msg.type === 'event') {
    handleStreamEvent(msg.event, msg.data);
  } else if (msg.type === 'state') {
    setConn(msg.state);
  } else if (msg.type === 'leader-leaving') {
    setConn('reconnecting');
  }
}

export function startStreaming() {
  const coordinator = new TabCoordinator({
    user: state.user,
    onLead: () => lead(coordinator),
    onMessage: (msg) => follow(coordinator, msg),
  });
  session.coordinator = coordinator;
  setConn('connecting');
  coordinator.start();
}

/** Give up the stream (and the leadership) when the page goes; reload when it comes back. */
export function wirePageLifecycle() {
  window.addEventListener('pagehide', (e) => {
    if (e.persisted) return;
    if (session.coordinator) session.coordinator.stop();
    if (session.stream) session.stream.stop();
  });
  window.addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });
}
