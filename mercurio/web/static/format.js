// Turning a notification's parts into text: its age and its data come from the SDK's format.js
// (one set of rules for the app and <mercurio-inbox>); the colour of a category chip is the
// app's own. Pure functions, no DOM.

export { describe, relativeTime, safeText } from '/sdk/format.js';

/** A stable hue for a category's chip, from a small palette that reads well on white. */
export function hue(category) {
  let h = 0;
  for (const ch of category) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return [220, 262, 190, 160, 330, 25, 45, 290, 200][h % 9];
}
