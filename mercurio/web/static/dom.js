// The page's elements (index.html), looked up once. Module scripts run after the document is
// parsed, so every element is there when this module is evaluated.

export const $ = (sel, root = document) => root.querySelector(sel);

export const ui = {
  topbar: $('.topbar'),
  conn: $('#conn'),
  connText: $('#conn .conn-text'),
  bell: $('#bell'),
  badge: $('#unread-badge'),
  userForm: $('#user-form'),
  userInput: $('#user-input'),
  inbox: $('#inbox'),
  inboxHeading: $('#inbox-heading'),
  inboxSub: $('#inbox-sub'),
  markAll: $('#mark-all-read'),
  pushToggle: $('#push-toggle'),
  pushStatus: $('#push-status'),
  statusButtons: [...document.querySelectorAll('.seg[data-status]')],
  categoryFilter: $('#category-filter'),
  muteMenu: $('#mute-menu'),
  muteList: $('#mute-list'),
  channelSwitches: [...document.querySelectorAll('input[data-channel]')],
  muteAdd: $('#mute-add'),
  muteAddInput: $('#mute-add-input'),
  muteError: $('#mute-error'),
  mutedCount: $('#muted-count'),
  error: $('#inbox-error'),
  streamStatus: $('#stream-status'),
  list: $('#list'),
  empty: $('#empty'),
  emptyText: $('#empty-text'),
  loadMore: $('#load-more'),
  announcer: $('#announcer'),
  template: $('#item-template'),
  publisher: $('#publisher'),
};
