// Reference client for onramp's live progress subscription, with the graphql-ws library
// that browser and Node apps use. Driven by tests/api/subscriptions.rs.
//
//   URL=ws://127.0.0.1:8080/graphql/ws TOKEN=<jwt> FLOW=welcome N=2 node client.mjs
//
// Prints every payload it receives as one JSON line on stdout, then exits 0 once it has
// N of them; exits 1 on any error, an early completion, or after TIMEOUT_MS (10 s).

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const { URL: url, TOKEN: token, FLOW: flow } = process.env;
const wanted = Number.parseInt(process.env.N ?? '1', 10);
const timeoutMs = Number.parseInt(process.env.TIMEOUT_MS ?? '10000', 10);

function fail(why) {
  process.stderr.write(`client.mjs: ${why}\n`);
  process.exit(1);
}

if (!url || !token || !flow || !(wanted > 0)) {
  fail('set URL, TOKEN, FLOW and N (a positive number)');
}

const query = `subscription($f: String!) {
  onboardingProgress(flowKey: $f) {
    flowKey version status revision points percentComplete completedCount totalCount
    steps { key status }
  }
}`;

let received = 0;

function describe(error) {
  if (error instanceof Error) return error.message;
  if (Array.isArray(error)) return JSON.stringify(error); // GraphQL errors
  if (error && typeof error.code === 'number') return `closed with ${error.code} ${error.reason ?? ''}`.trim();
  return JSON.stringify(error);
}

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  // A test wants the first failure, not a reconnecting client.
  retryAttempts: 0,
  shouldRetry: () => false,
  on: {
    closed: (event) => {
      if (received < wanted) fail(`connection ${describe(event)} after ${received} of ${wanted} messages`);
    },
  },
});

const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms with ${received} of ${wanted} messages`), timeoutMs);

client.subscribe(
  { query, variables: { f: flow } },
  {
    next(payload) {
      received += 1;
      process.stdout.write(`${JSON.stringify(payload)}\n`, () => {
        if (payload.errors) fail(`errors: ${JSON.stringify(payload.errors)}`);
      });
      if (!payload.errors && received >= wanted) {
        clearTimeout(timer);
        // Flush stdout before leaving; the payload lines are the test's evidence.
        process.stdout.write('', () => {
          client.dispose();
          process.exit(0);
        });
      }
    },
    error(error) {
      fail(`subscription error: ${describe(error)}`);
    },
    complete() {
      if (received < wanted) fail(`subscription completed after ${received} of ${wanted} messages`);
    },
  },
);
