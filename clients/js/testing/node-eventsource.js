// A small EventSource for Node 20 (which has none), over fetch: enough for the live tests to
// open the real stream with a ticket. Only what the SDK uses: onopen, onmessage, onerror,
// addEventListener for named events, close().

export class NodeEventSource {
  constructor(url) {
    this.url = url;
    this.listeners = {};
    this._abort = new AbortController();
    this._run();
  }

  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }

  close() { this._abort.abort(); }

  async _run() {
    try {
      const response = await fetch(this.url, { headers: { Accept: 'text/event-stream' }, signal: this._abort.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.onopen && this.onopen({});
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          this._frame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      throw new Error('stream ended');
    } catch (err) {
      if (!this._abort.signal.aborted) this.onerror && this.onerror({ error: err });
    }
  }

  _frame(text) {
    let type = 'message';
    let id = '';
    const data = [];
    for (const line of text.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
    }
    if (!data.length) return;
    const event = { data: data.join('\n'), lastEventId: id };
    if (type === 'message') this.onmessage && this.onmessage(event);
    for (const fn of this.listeners[type] || []) fn(event);
  }
}
