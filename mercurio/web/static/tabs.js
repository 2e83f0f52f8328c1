// One stream per user per browser: the tabs of one user elect a leader with the Web Locks API
// (lock "mercurio-stream-<user>"). The leader holds the stream and relays every event and its
// connection state to the other tabs over BroadcastChannel("mercurio-<user>"). When the leader
// tab closes its lock is released, the next waiting tab acquires it and resumes the stream from
// the last notification id it saw (relayed events carry it), so nothing is lost.
//
// Without Web Locks or BroadcastChannel every tab simply leads its own stream.

export class TabCoordinator {
  /**
   * @param {object} o
   * @param {string} o.user
   * @param {() => void} o.onLead          called once this tab becomes the leader
   * @param {(msg: object) => void} o.onMessage  a message from another tab
   */
  constructor({ user, onLead, onMessage }) {
    this.user = user;
    this.onLead = onLead;
    this.onMessage = onMessage;
    this.isLeader = false;
    this.channel = null;
    this.supported = typeof BroadcastChannel === 'function' && !!(navigator.locks && navigator.locks.request);
    this._release = null;
  }

  start() {
    if (!this.supported) {
      this._becomeLeader();
      return;
    }
    this.channel = new BroadcastChannel(`mercurio-${this.user}`);
    this.channel.onmessage = (e) => this.onMessage(e.data || {});
    // Waits in the lock's queue until the current leader (if any) goes away.
    navigator.locks.request(`mercurio-stream-${this.user}`, () => new Promise((resolve) => {
      this._release = resolve;
      this._becomeLeader();
    })).catch((err) => console.warn('mercurio: tab election failed', err));
    this.post({ type: 'hello' });
  }

  _becomeLeader() {
    this.isLeader = true;
    this.onLead();
  }

  post(msg) {
    if (this.channel) {
      try { this.channel.postMessage(msg); } catch (err) { console.warn('mercurio: relay failed', err); }
    }
  }

  stop() {
    if (this.isLeader) this.post({ type: 'leader-leaving' });
    this.isLeader = false;
    if (this._release) { this._release(); this._release = null; }
    if (this.channel) { this.channel.close(); this.channel = null; }
  }
}
