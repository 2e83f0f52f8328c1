// The shadow DOM's style sheet. Everything an embedder may restyle is a CSS custom property
// (--mercurio-*, inherited through the shadow boundary) or a ::part() name.

export const STYLES = `
:host {
  display: inline-block;
  position: relative;
  font: var(--mercurio-font, inherit);
  color: var(--mercurio-fg, #111827);
  line-height: 1.4;
}
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
button { font: inherit; color: inherit; }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}
.bell {
  position: relative; display: inline-flex; align-items: center; justify-content: center;
  width: var(--mercurio-bell-size, 40px); height: var(--mercurio-bell-size, 40px);
  border: 1px solid transparent; border-radius: 50%; padding: 0; cursor: pointer;
  background: var(--mercurio-bell-bg, transparent); color: var(--mercurio-bell-fg, currentColor);
}
.bell:hover { background: var(--mercurio-hover-bg, rgba(0, 0, 0, 0.06)); }
.bell:focus-visible, button:focus-visible, [tabindex]:focus-visible {
  outline: 2px solid var(--mercurio-accent, #2563eb); outline-offset: 2px;
}
.bell svg { width: 60%; height: 60%; }
.badge {
  position: absolute; top: -2px; right: -4px; min-width: 18px; height: 18px; padding: 0 5px;
  border-radius: 9px; font-size: 11px; font-weight: 700; line-height: 18px; text-align: center;
  background: var(--mercurio-badge-bg, #dc2626); color: var(--mercurio-badge-fg, #fff);
}
.badge[hidden] { display: none; }
.panel {
  position: absolute; top: calc(100% + 8px); right: 0; z-index: var(--mercurio-z-index, 1000);
  width: var(--mercurio-panel-width, 380px); max-width: calc(100vw - 16px);
  max-height: var(--mercurio-panel-max-height, min(70vh, 560px));
  display: flex; flex-direction: column; overflow: hidden;
  background: var(--mercurio-bg, #fff); color: var(--mercurio-fg, #111827);
  border: 1px solid var(--mercurio-border, #e5e7eb); border-radius: var(--mercurio-radius, 10px);
  box-shadow: var(--mercurio-shadow, 0 10px 30px rgba(0, 0, 0, 0.15));
  text-align: start;
}
.panel[hidden] { display: none; }
.head {
  display: flex; flex-wrap: wrap; align-items: center; gap: 6px 8px; padding: 10px 12px;
  border-bottom: 1px solid var(--mercurio-border, #e5e7eb);
}
.title { flex: 1 1 auto; margin: 0; font-size: 1rem; font-weight: 600; }
.title:focus { outline: none; }
.filter { display: inline-flex; border: 1px solid var(--mercurio-border, #e5e7eb); border-radius: 6px; overflow: hidden; }
.filter button, .link, .more, .retry, .push-toggle {
  border: 0; background: transparent; cursor: pointer; padding: 4px 8px; font-size: 0.85rem;
}
.filter button[aria-pressed="true"] { background: var(--mercurio-accent, #2563eb); color: var(--mercurio-accent-fg, #fff); }
.link, .more, .retry, .push-toggle { color: var(--mercurio-accent, #2563eb); }
.link:disabled { color: var(--mercurio-muted, #6b7280); cursor: default; }
.notice { margin: 0; padding: 8px 12px; font-size: 0.85rem; overflow-wrap: anywhere; }
.notice[hidden] { display: none; }
.status { color: var(--mercurio-muted, #6b7280); background: var(--mercurio-status-bg, #f9fafb); }
.error { color: var(--mercurio-error, #b91c1c); background: var(--mercurio-error-bg, #fef2f2); }
.push { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 8px; }
.body { overflow-y: auto; overscroll-behavior: contain; }
.list { list-style: none; margin: 0; padding: 0; }
.item { display: flex; align-items: stretch; border-bottom: 1px solid var(--mercurio-border, #e5e7eb); }
.item.unread { background: var(--mercurio-unread-bg, #eff6ff); }
.main {
  flex: 1 1 auto; min-width: 0; display: flex; gap: 8px; padding: 10px 12px; border: 0;
  background: transparent; text-align: start; cursor: pointer;
}
.main:hover { background: var(--mercurio-hover-bg, rgba(0, 0, 0, 0.04)); }
.dot { flex: none; width: 8px; height: 8px; margin-top: 6px; border-radius: 50%; background: transparent; }
.unread .dot { background: var(--mercurio-accent, #2563eb); }
.text { min-width: 0; display: flex; flex-direction: column; gap: 2px; overflow-wrap: anywhere; }
.item-title { font-weight: 600; }
.item-title:empty { display: none; }
.item-body { white-space: pre-line; }
.meta { font-size: 0.75rem; color: var(--mercurio-muted, #6b7280); }
.toggle {
  flex: none; width: 36px; border: 0; background: transparent; cursor: pointer;
  color: var(--mercurio-muted, #6b7280); font-size: 1rem;
}
.toggle:hover { color: var(--mercurio-accent, #2563eb); }
.empty { margin: 0; padding: 24px 12px; text-align: center; color: var(--mercurio-muted, #6b7280); }
.empty[hidden], .more[hidden], .push[hidden] { display: none; }
.more { display: block; width: 100%; padding: 10px; }
`;

export const BELL_ICON = `<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"
  stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">
  <path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/><path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/></svg>`;
