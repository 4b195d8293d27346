// Talking to onramp: the token (sessionStorage), GraphQL over HTTP, and live
// subscriptions over graphql-transport-ws (the protocol is small enough to speak here
// without a library).

const TOKEN_KEY = 'onramp.console.token';

export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value.trim().replace(/^Bearer\s+/i, '')),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** The unverified claims of a JWT, for display only (the server verifies). */
export function claims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '='));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

/** In development the server hands out an admin token; elsewhere this is null. */
export async function developmentToken() {
  try {
    const response = await fetch('/console/dev-token', { headers: { accept: 'application/json' } });
    if (!response.ok) return null;
    return (await response.json()).token ?? null;
  } catch {
    return null;
  }
}

/** Runs a query; resolves to `data`, rejects with the first error (and its code). */
export async function gql(query, variables = {}) {
  const headers = { 'content-type': 'application/json', accept: 'application/graphql-response+json' };
  const jwt = token.get();
  if (jwt) headers.authorization = `Bearer ${jwt}`;
  let response;
  try {
    response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch (error) {
    throw new ApiError(`onramp is unreachable (${error.message})`, 'NETWORK');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`HTTP ${response.status} without a GraphQL answer`, 'HTTP');
  }
  if (body.errors?.length) {
    const [first] = body.errors;
    throw new ApiError(first.message, first.extensions?.code);
  }
  return body.data;
}

/**
 * Subscribes over /graphql/ws. `on.next(data)` gets each payload's data, `on.error(err)`
 * errors, `on.state(s)` one of 'connecting', 'live', 'retrying', 'closed'. Reconnects
 * with backoff unless the token was refused (4403) or `unsubscribe` was called.
 * Returns `unsubscribe`.
 */
export function subscribe(query, variables, on) {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`;
  let socket = null;
  let stopped = false;
  let attempt = 0;
  let retryTimer = null;

  const state = (s) => on.state?.(s);

  function connect() {
    state(attempt === 0 ? 'connecting' : 'retrying');
    socket = new WebSocket(url, 'graphql-transport-ws');
    socket.addEventListener('open', () => {
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token.get() ?? ''}` } }));
    });
    socket.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      switch (message.type) {
        case 'connection_ack':
          attempt = 0;
          socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables } }));
          state('live');
          break;
        case 'ping':
          socket.send(JSON.stringify({ type: 'pong' }));
          break;
        case 'next': {
          const { data, errors } = message.payload ?? {};
          if (errors?.length) on.error?.(new ApiError(errors[0].message, errors[0].extensions?.code));
          else on.next(data);
          break;
        }
        case 'error': {
          const [first] = Array.isArray(message.payload) ? message.payload : [message.payload];
          on.error?.(new ApiError(first?.message ?? 'subscription refused', first?.extensions?.code));
          stop();
          break;
        }
        case 'complete':
          stop();
          break;
        default:
          break;
      }
    });
    socket.addEventListener('close', (event) => {
      if (stopped) return;
      if (event.code === 4403) {
        on.error?.(new ApiError(`the server refused the token (${event.reason || 'Forbidden'})`, 'UNAUTHENTICATED'));
        stopped = true;
        state('closed');
        return;
      }
      attempt += 1;
      state('retrying');
      const delay = Math.min(10_000, 250 * 2 ** Math.min(attempt, 6)) * (0.75 + Math.random() / 2);
      retryTimer = setTimeout(connect, delay);
    });
  }

  function stop() {
    if (stopped) return;
    stopped = true;
    clearTimeout(retryTimer);
    if (socket && socket.readyState <= WebSocket.OPEN) {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ id: '1', type: 'complete' }));
      socket.close(1000, 'done');
    }
    state('closed');
  }

  connect();
  return stop;
}
