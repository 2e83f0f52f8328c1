// The inbox's model: the notifications shown, the ones ever seen, the stream cursor, the filter,
// the known and muted categories and the channels' preferences; plus the session's live parts
// once boot() has made them.

export const state = {
  user: null,
  items: new Map(),        // notificationID -> notification shown with the current filter
  seen: new Set(),         // every notificationID ever received or listed: dedupe
  lastEventId: null,       // highest notification id seen (the stream cursor)
  unread: 0,
  countVersion: 0,
  filter: { status: 'all', category: '' },
  nextBefore: null,
  categories: new Set(['general']),
  muted: new Set(),        // muted everywhere
  channels: {              // per channel: on or off, and its own muted categories
    push: { enabled: true, muted: new Set() },
    email: { enabled: true, muted: new Set() },
  },
  conn: 'offline',
  loading: null,           // {arrived: []} while the list is being (re)loaded
  ready: false,
};

/** The signed-in user's MercurioClient (the SDK's), once boot() has made it. */
export const session = { api: null };

/** A notification from the list or the stream, with every field of the shape the app expects. */
export function normalize(n) {
  return {
    notificationID: Number(n.notificationID),
    eventID: n.eventID,
    sourceID: typeof n.sourceID === 'string' ? n.sourceID : '',
    data: n.data,
    category: typeof n.category === 'string' && n.category ? n.category : 'general',
    createdAt: n.createdAt,
    readAt: n.readAt || null,
  };
}

export function bumpCursor(id) {
  if (Number.isFinite(id) && (state.lastEventId == null || id > state.lastEventId)) state.lastEventId = id;
}

export function matchesFilter(n) {
  if (state.filter.category && n.category !== state.filter.category) return false;
  if (state.filter.status === 'unread' && n.readAt) return false;
  if (state.filter.status === 'read' && !n.readAt) return false;
  return true;
}
