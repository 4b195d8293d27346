// The console shell: who is signed in, the navigation, and a hash router over the three
// pages. Each page's render(main, params, ctx) may return a function that stops it
// (the checklist closes its subscription).

import { ApiError, claims, developmentToken, gql, token } from './api.js';
import { h, problem, replace } from './dom.js';
import * as checklist from './checklist.js';
import * as flows from './flows.js';
import * as analytics from './analytics.js';

const PAGES = {
  checklist: { title: 'Checklist', module: checklist },
  flows: { title: 'Flows', module: flows },
  analytics: { title: 'Analytics', module: analytics },
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let stopPage = null;
const DEVELOPMENT_KEY = 'onramp.console.development';
/** Whether this tab's token came from the development endpoint. */
let development = sessionStorage.getItem(DEVELOPMENT_KEY) === '1';

function setDevelopment(value) {
  development = value;
  sessionStorage.setItem(DEVELOPMENT_KEY, value ? '1' : '0');
}

/** The page and its parameters from `#/page?a=1&b=2`. */
function route() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const name = PAGES[path] ? path : 'checklist';
  return { name, params: Object.fromEntries(new URLSearchParams(query)) };
}

/** Goes to a page with these parameters (empty ones left out). */
export function navigate(name, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''));
  const hash = `#/${name}${query.size ? `?${query}` : ''}`;
  if (location.hash === hash) render();
  else location.hash = hash;
}

function role() {
  const jwt = token.get();
  const c = jwt ? claims(jwt) : null;
  return c?.role ?? null;
}

function renderChrome(current) {
  if (!token.get()) {
    replace(nav);
    replace(who);
    return;
  }
  replace(
    nav,
    Object.entries(PAGES).map(([name, page]) =>
      h('a', { href: `#/${name}`, class: name === current ? 'active' : null, 'aria-current': name === current ? 'page' : null }, page.title),
    ),
  );
  const c = claims(token.get()) ?? {};
  replace(
    who,
    h('span.who-name', { title: c.exp ? `expires ${new Date(c.exp * 1000).toISOString()}` : null }, c.sub ?? 'unknown subject'),
    h('span.badge.badge-role', c.role ?? 'no role'),
    development ? h('span.badge.badge-dev', 'development') : null,
    h('button.link', { type: 'button', onclick: signOut }, development ? 'Change token' : 'Sign out'),
  );
}

function signOut() {
  token.clear();
  setDevelopment(false);
  render();
}

function signIn(reason) {
  renderChrome(null);
  const input = h('textarea#token-input', {
    rows: 5,
    spellcheck: 'false',
    autocomplete: 'off',
    placeholder: 'eyJhbGciOi…',
    'aria-label': 'Token',
  });
  const status = h('div.sign-in-status');
  const form = h(
    'form.card.sign-in',
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const value = input.value.trim().replace(/^Bearer\s+/i, '');
        const c = claims(value);
        if (!c) {
          replace(status, problem({ code: 'VALIDATION_FAILED', message: 'That is not a JWT (three base64url parts).' }));
          return;
        }
        if (c.exp && c.exp * 1000 < Date.now()) {
          replace(status, problem({ code: 'UNAUTHENTICATED', message: 'That token has expired.' }));
          return;
        }
        token.set(value);
        setDevelopment(false);
        try {
          await gql('{ onboardings { flowKey } }');
        } catch (error) {
          if (error instanceof ApiError && error.code === 'UNAUTHENTICATED') {
            token.clear();
            replace(status, problem(error));
            return;
          }
        }
        render();
      },
    },
    h('h1', 'Sign in'),
    h(
      'p.muted',
      'Paste a token signed with the server’s key. An admin token sees everything; a user token sees only its own checklist. ',
      'It is kept in this tab only (sessionStorage) and sent to this server alone. ',
      'Mint one with ',
      h('code', 'onramp token --sub you --role admin'),
      '.',
    ),
    reason ? problem(reason) : null,
    input,
    status,
    h(
      'div.actions',
      h('button.primary', { type: 'submit', id: 'sign-in' }, 'Sign in'),
      h('button', { type: 'button', onclick: useDevelopmentToken }, 'Use the development token'),
    ),
  );
  replace(main, form);
  input.focus();
}

async function useDevelopmentToken() {
  const jwt = await developmentToken();
  if (!jwt) {
    signIn({ code: 'NOT_FOUND', message: 'This server is not in development mode: paste a token.' });
    return;
  }
  token.set(jwt);
  setDevelopment(true);
  render();
}

function render() {
  stopPage?.();
  stopPage = null;
  if (!token.get()) {
    signIn();
    return;
  }
  const { name, params } = route();
  renderChrome(name);
  document.title = `${PAGES[name].title} · onramp console`;
  main.replaceChildren();
  const context = { role: role(), navigate, onUnauthenticated: (error) => { token.clear(); signIn(error); } };
  try {
    stopPage = PAGES[name].module.render(main, params, context) ?? null;
  } catch (error) {
    replace(main, problem(error));
  }
}

async function start() {
  // In development the console needs no set-up: the server hands out an admin token.
  if (!token.get()) {
    const jwt = await developmentToken();
    if (jwt) {
      token.set(jwt);
      setDevelopment(true);
    }
  }
  addEventListener('hashchange', render);
  render();
}

start();
