// Drives the built client (dist/) against a real onramp server; run by
// tests/api/client_typescript.rs with the server's URL and tokens in the environment.
// Prints one JSON line per check; exits non-zero on the first failure.
import assert from 'node:assert/strict';
import WebSocket from 'ws';

import { createClient, OnrampError } from '../dist/index.js';

const { ONRAMP_URL, ONRAMP_TOKEN, ONRAMP_EXPIRED_TOKEN, ONRAMP_SERVICE_TOKEN, ONRAMP_FLOW } = process.env;
const flow = ONRAMP_FLOW;

/** A provider that hands out an expired token until asked to refresh. */
function refreshingProvider() {
  const calls = [];
  let current = ONRAMP_EXPIRED_TOKEN;
  const provider = ({ refresh }) => {
    calls.push(refresh);
    if (refresh) current = ONRAMP_TOKEN;
    return current;
  };
  return { provider, calls };
}

function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const http = refreshingProvider();
const alice = createClient({ url: ONRAMP_URL, token: http.provider, webSocketImpl: WebSocket });

// status: the expired token is refused, the client refreshes it once and retries.
const before = await alice.status(flow);
assert.equal(before.status, 'NOT_STARTED');
assert.equal(before.percentComplete, 0);
assert.deepEqual(http.calls, [false, true]);
console.log(JSON.stringify({ check: 'status with token refresh', status: before.status, calls: http.calls }));

// watchProgress: the websocket is refused the expired token (close 4403), reconnects with a
// fresh one, then delivers the current state and every change.
const ws = refreshingProvider();
const watcher = createClient({ url: ONRAMP_URL, token: ws.provider, webSocketImpl: WebSocket });
const snapshots = [];
let wake = () => {};
const errors = [];
const stop = watcher.watchProgress(flow, {
  next: (status) => {
    snapshots.push(status);
    wake();
  },
  error: (error) => errors.push(error),
});
const snapshot = (predicate, what) =>
  within(
    10_000,
    what,
    new Promise((resolve) => {
      const check = () => {
        const found = snapshots.find(predicate);
        if (found) resolve(found);
        else wake = check;
      };
      check();
    }),
  );
await snapshot(() => true, 'the first snapshot');
assert.ok(ws.calls.includes(true), `the websocket asked for a fresh token: ${JSON.stringify(ws.calls)}`);
console.log(JSON.stringify({ check: 'watchProgress reconnects with a fresh token', calls: ws.calls }));

// completeStep: typed result, and the watcher sees it.
const done = await alice.completeStep(flow, 'verify_email', { metadata: { via: 'client' } });
assert.equal(done.status, 'IN_PROGRESS');
assert.equal(done.steps.find((s) => s.key === 'verify_email')?.status, 'COMPLETED');
assert.deepEqual(done.steps.find((s) => s.key === 'verify_email')?.metadata, { via: 'client' });
const live = await snapshot((s) => s.revision >= done.revision && s.percentComplete === done.percentComplete && s.percentComplete > 0, 'the update');
console.log(JSON.stringify({ check: 'completeStep, seen live', percentComplete: live.percentComplete, revision: live.revision }));

// skipStep on an optional step.
const skipped = await alice.skipStep(flow, 'tour', { reason: 'later' });
assert.equal(skipped.steps.find((s) => s.key === 'tour')?.status, 'SKIPPED');
console.log(JSON.stringify({ check: 'skipStep' }));

// trackEvents with a service token completes the last required step; the watcher sees 100 %.
const service = createClient({ url: ONRAMP_URL, token: () => ONRAMP_SERVICE_TOKEN });
const [result] = await service.trackEvents([{ id: `evt-${Date.now()}`, subjectId: 'alice', name: 'profile.completed' }]);
assert.equal(result?.status, 'NEW');
assert.deepEqual(result?.completed.map((c) => c.stepKey), ['profile']);
const complete = await snapshot((s) => s.status === 'COMPLETED', 'completion');
assert.equal(complete.percentComplete, 100);
console.log(JSON.stringify({ check: 'trackEvents, seen live', status: complete.status }));

// A refusal carries onramp's code.
await assert.rejects(alice.completeStep(flow, 'no_such_step'), (error) => error instanceof OnrampError && error.code === 'NOT_FOUND');
console.log(JSON.stringify({ check: 'errors carry extensions.code' }));

assert.deepEqual(errors, []);
stop();
await watcher.dispose();
await alice.dispose();
console.log(JSON.stringify({ ok: true }));
