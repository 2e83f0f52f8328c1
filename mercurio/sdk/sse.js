// A server-sent events frame parser (the WHATWG "event stream interpretation" rules), used by
// the fetch transport (stream.js), which reads `response.body` itself.

export class SSEParser {
  /** @param {(event: {type: string, data: string, id: string|null}) => void} onEvent */
  constructor(onEvent, { onComment, onRetry } = {}) {
    this.onEvent = onEvent;
    this.onComment = onComment || (() => {});
    this.onRetry = onRetry || (() => {});
    this.decoder = new TextDecoder('utf-8');
    this.buffer = '';
    this.lastEventId = null;
    this._reset();
  }

  _reset() {
    this.eventType = '';
    this.dataLines = [];
    this.idField = null;
  }

  /** Feed a chunk of bytes (Uint8Array). */
  push(chunk) {
    this.buffer += this.decoder.decode(chunk, { stream: true });
    this._drain();
  }

  /** Feed text directly (tests, or already decoded input). */
  pushText(text) {
    this.buffer += text;
    this._drain();
  }

  _drain() {
    // Lines end with \r\n, \n or \r. A lone \r at the very end may be the start of \r\n: keep it.
    for (;;) {
      const match = /\r\n|\n|\r/.exec(this.buffer);
      if (!match) return;
      if (match[0] === '\r' && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this._line(line);
    }
  }

  _line(line) {
    if (line === '') { this._dispatch(); return; }
    if (line.startsWith(':')) { this.onComment(line.slice(1).trimStart()); return; }
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
    }
    switch (field) {
      case 'event': this.eventType = value; break;
      case 'data': this.dataLines.push(value); break;
      case 'id': if (!value.includes('\0')) this.idField = value; break;
      case 'retry': if (/^\d+$/.test(value)) this.onRetry(Number(value)); break;
      default: break; // unknown fields are ignored
    }
  }

  _dispatch() {
    if (this.idField !== null) this.lastEventId = this.idField;
    if (this.dataLines.length === 0) { this._reset(); return; }
    const event = {
      type: this.eventType || 'message',
      data: this.dataLines.join('\n'),
      id: this.idField !== null ? this.idField : this.lastEventId,
    };
    this._reset();
    this.onEvent(event);
  }
}
