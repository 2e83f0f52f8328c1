// The two ways a call fails: the server answered with an error, or it was never reached.

/** The server answered with an error status; `message` is its {"error": "..."} text. */
export class MercurioError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = 'MercurioError';
    this.status = status;
    this.body = body;
  }
}

/** The request never reached the server (offline, DNS, connection refused, CORS refused). */
export class MercurioNetworkError extends MercurioError {
  constructor(message) {
    super(0, message);
    this.name = 'MercurioNetworkError';
    this.network = true;
  }
}
