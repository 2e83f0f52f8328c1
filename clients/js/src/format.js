// Turning a notification's parts into text: its age and its data (any JSON a publisher sent).
// Pure functions, no DOM (the web app at /app/ renders with these too).

export function relativeTime(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  if (d === 1) return 'yesterday';
  if (d < 7) return `${d} days ago`;
  const date = new Date(t);
  const sameYear = date.getFullYear() === new Date(now).getFullYear();
  return date.toLocaleDateString(undefined, { month: 'short', day: 'numeric', ...(sameYear ? {} : { year: 'numeric' }) });
}

// A notification's data is whatever JSON a publisher sent, so turning it into text must never
// throw: String() of {"toString": 1} (or of an array holding one) does, JSON.stringify does not.
const MAX_TEXT = 5000; // a huge payload would only slow the page and the screen reader down

function clip(text) {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
}

export function safeText(value) {
  if (value == null) return '';
  if (typeof value === 'string') return clip(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  try {
    return clip(JSON.stringify(value) ?? '');
  } catch {
    return '[data that cannot be shown]';
  }
}

/** The first of `names` the object has as its own non-null property (never an inherited one). */
function field(data, names) {
  for (const name of names) if (Object.hasOwn(data, name) && data[name] != null) return data[name];
  return undefined;
}

export function describe(data) {
  if (typeof data === 'string') return { title: '', text: clip(data) };
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    const title = field(data, ['title', 'subject', 'heading']);
    const text = field(data, ['body', 'message', 'text', 'description']);
    if (title !== undefined || text !== undefined) return { title: safeText(title), text: safeText(text) };
  }
  return { title: '', text: data === null ? 'null' : safeText(data) };
}

