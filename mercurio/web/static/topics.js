// The topics the user follows, in the Preferences menu: listed with an Unfollow button each,
// and a form to follow one more. Following starts from now: older topic notifications do not
// appear (issue 13); unfollowing keeps what was received.

import { ui } from './dom.js';
import { session } from './state.js';

const TOPIC = /^[a-z0-9][a-z0-9_-]{0,63}$/;
let followed = [];

function say(text) {
  ui.topicError.textContent = text;
  ui.topicError.hidden = !text;
}

function render() {
  ui.topicList.replaceChildren(...followed.map((topic) => {
    const li = document.createElement('li');
    li.dataset.topic = topic;
    const name = document.createElement('span');
    name.textContent = topic;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn btn-ghost btn-small';
    button.textContent = 'Unfollow';
    button.setAttribute('aria-label', `Unfollow ${topic}`);
    li.append(name, button);
    return li;
  }));
  ui.topicNone.hidden = followed.length > 0;
}

export async function loadTopics() {
  try {
    followed = (await session.api.topics()).topics || [];
    render();
    say('');
  } catch (err) {
    say(`Could not load your topics: ${err.message}`);
  }
}

async function change(topic, follow) {
  const before = followed;
  followed = follow ? [...new Set([...followed, topic])].sort() : followed.filter((t) => t !== topic);
  render();  // at once; put back if the server refuses
  try {
    await (follow ? session.api.follow(topic) : session.api.unfollow(topic));
    say('');
  } catch (err) {
    if (!follow && err.status === 404) return;  // not followed any more: already as shown
    followed = before;
    render();
    const offline = typeof navigator !== 'undefined' && navigator.onLine === false;
    say(`${offline ? 'You are offline: could' : 'Could'} not ${follow ? 'follow' : 'unfollow'} ${topic}: ${err.message}`);
  }
}

export function wireTopics() {
  ui.topicAdd.addEventListener('submit', (e) => {
    e.preventDefault();
    const topic = ui.topicAddInput.value.trim();
    if (!session.api) return;
    if (!TOPIC.test(topic)) {
      say('A topic is 1–64 lowercase letters, digits, - or _, starting with a letter or digit.');
      return;
    }
    ui.topicAddInput.value = '';
    change(topic, true);
  });
  ui.topicList.addEventListener('click', (e) => {
    const li = e.target.closest('button') && e.target.closest('li[data-topic]');
    if (li && session.api) change(li.dataset.topic, false);
  });
}
