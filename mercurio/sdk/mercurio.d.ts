// Type declarations for the Mercurio JavaScript SDK (src/mercurio.js, served as /sdk/mercurio.js).

/** A notification as the list and get routes answer it (docs/API.md). */
export interface Notification {
  notificationID: number;
  eventID: string;
  sourceID: string;
  /** The published JSON value, usually a string or an object with title/body. */
  data: unknown;
  category: string;
  /** RFC 3339 UTC */
  createdAt: string;
  /** RFC 3339 UTC, only when read */
  readAt?: string | null;
  /** The topic it was published to, only for a topic notification. */
  topic?: string;
}

/** A notification as the stream sends it. */
export interface StreamNotification {
  notificationID: number;
  eventID: string;
  sourceID: string;
  clientID: string;
  data: unknown;
  category: string;
  createdAt: string;
  /** The topic it was published to, only for a topic notification. */
  topic?: string;
}

/** The stream's `read-state` event: another tab or device (or this one) changed read state. */
export interface ReadState {
  /** null for "mark all read" */
  notificationID: number | null;
  status: 'read' | 'unread' | 'deleted';
  category: string | null;
  /** null when the count differs per user (an announcement retracted or replaced) */
  unreadCount: number | null;
}

export type StreamStatus = 'connecting' | 'live' | 'reconnecting' | 'offline' | 'closed';

export interface ListOptions {
  status?: 'all' | 'read' | 'unread';
  /** 1 to the server's maximum; the server's default is 50 */
  limit?: number;
  /** the nextBefore of the previous page */
  before?: number;
  category?: string;
}

export interface NotificationPage {
  notifications: Notification[];
  unreadCount: number;
  /** pass as `before` for the next (older) page; null on the last page */
  nextBefore: number | null;
}

export interface Preferences {
  mutedCategories: string[];
}

export interface PushSubscriptionRecord {
  id: number;
  endpoint: string;
  createdAt: string;
}

export interface SubscribeHandlers {
  onNotification?: (notification: StreamNotification) => void;
  onReadState?: (change: ReadState) => void;
  /** The replay was cut short (too much missed): reload the list. */
  onReset?: () => void;
  /**
   * The stream's state; `detail.error` says why it is not live when the server refused it
   * (e.g. status 429, "too many open streams: at most 10 per client").
   */
  onStatus?: (status: StreamStatus, detail?: { delay?: number; error?: { status?: number; message: string } }) => void;
  /** Resume after this notification id (e.g. the newest one listed). */
  lastEventId?: number;
}

export interface Subscription {
  close(): void;
}

export interface MercurioClientOptions {
  /** The Mercurio server's URL, e.g. "https://notify.example.com"; absent: this page's origin. */
  server?: string;
  /** Whose inbox: the user the token names. */
  clientId: string;
  /**
   * An async function returning a JWT for clientId. Called again shortly before the token's
   * `exp`, after a 401 and after the stream's `token-expired`. A fixed string is accepted too.
   */
  token: (() => Promise<string>) | string;
  /** A fetch implementation (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /** An EventSource constructor (default: globalThis.EventSource). */
  EventSource?: typeof EventSource;
  /**
   * How subscribe() reads the stream: "eventsource" (default), a native EventSource with
   * single-use tickets; or "fetch", fetch() with the JWT in an Authorization header.
   */
  transport?: 'eventsource' | 'fetch';
}

/** The server answered with an error status; `message` is its {"error": "..."} text. */
export class MercurioError extends Error {
  constructor(status: number, message: string, body?: unknown);
  readonly status: number;
  readonly body: unknown;
}

/** The request never reached the server (offline, refused, blocked by CORS). */
export class MercurioNetworkError extends MercurioError {
  constructor(message: string);
  readonly network: true;
}

export class MercurioClient {
  constructor(options: MercurioClientOptions);
  readonly server: string;
  readonly clientId: string;
  readonly transport: 'eventsource' | 'fetch';

  list(options?: ListOptions): Promise<NotificationPage>;
  get(id: number): Promise<Notification>;
  markRead(id: number): Promise<{ status: 'read' }>;
  markUnread(id: number): Promise<{ status: 'unread' }>;
  markAllRead(options?: { category?: string }): Promise<{ status: 'read'; updated: number }>;
  delete(id: number): Promise<{ status: 'deleted' }>;
  unreadCount(): Promise<number>;

  preferences(): Promise<Preferences>;
  setPreferences(preferences: Preferences): Promise<Preferences>;

  /** Subscribe to a topic (a slug): its notifications published from now on (PUT /api/clients/{c}/topics/{topic}). */
  follow(topic: string): Promise<{ clientID: string; topic: string; status: 'subscribed' }>;
  /** Unsubscribe; what was received stays. Rejects with 404 when not subscribed (DELETE …/topics/{topic}). */
  unfollow(topic: string): Promise<{ clientID: string; topic: string; status: 'unsubscribed' }>;
  /** The topics followed now, in name order (GET /api/clients/{c}/topics). */
  topics(): Promise<{ clientID: string; topics: string[] }>;

  /** The server's VAPID public key (base64url), or null when Web Push is off. */
  vapidPublicKey(): Promise<string | null>;
  pushSubscriptions(): Promise<{ clientID: string; subscriptions: PushSubscriptionRecord[] }>;
  addPushSubscription(subscription: PushSubscriptionJSON): Promise<PushSubscriptionRecord>;
  removePushSubscription(id: number): Promise<{ status: 'deleted' }>;

  /** A single-use ticket for the stream (what subscribe() uses). */
  streamTicket(): Promise<{ ticket: string; expiresIn: number }>;

  /**
   * Live events over a native EventSource with single-use tickets (the JWT never in a URL),
   * resumed with lastEventId; one stream for all tabs of this origin (Web Locks +
   * BroadcastChannel).
   */
  subscribe(handlers?: SubscribeHandlers): Subscription;

  /** Send one request to a path of the server, with the token; the parsed JSON answer. */
  request(method: string, path: string, body?: unknown): Promise<any>;
}

export interface NotificationEventDetail {
  notification: StreamNotification;
}

export interface ReadStateEventDetail extends ReadState {
  /** "local": made by this element; "stream": another tab or device */
  source: 'local' | 'stream';
}

/** <mercurio-inbox server="…" client-id="…" service-worker="…"> */
export class MercurioInbox extends HTMLElement {
  /** An async function returning a JWT for client-id; the element starts once it is set. */
  tokenProvider: (() => Promise<string>) | null;
  /** How many notifications are unread. */
  readonly unreadCount: number;
  /** The client in use, null until started. */
  readonly client: MercurioClient | null;
  /** Whether the panel is open. */
  readonly open: boolean;
  show(): void;
  hide(options?: { focusBell?: boolean }): void;
}

/** Define <mercurio-inbox> (done on import; a no-op when already defined or outside a browser). */
export function defineInbox(name?: string): void;

export const VERSION: string;

declare global {
  interface HTMLElementTagNameMap {
    'mercurio-inbox': MercurioInbox;
  }
  interface HTMLElementEventMap {
    'mercurio:notification': CustomEvent<NotificationEventDetail>;
    'mercurio:read-state': CustomEvent<ReadStateEventDetail>;
  }
}
