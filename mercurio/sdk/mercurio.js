// The Mercurio JavaScript SDK: `import { MercurioClient } from 'https://<mercurio>/sdk/mercurio.js'`
// (an ES module, no build step), and the <mercurio-inbox> custom element, defined on import in
// a browser. Types: mercurio.d.ts next to this file.

import { defineInbox } from './inbox.js';

export { MercurioClient } from './client.js';
export { MercurioError, MercurioNetworkError } from './errors.js';
export { MercurioInbox, defineInbox } from './inbox.js';

export const VERSION = '0.1.0';

defineInbox();
