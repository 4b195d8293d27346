// Drives the console in a real browser (Debian's chromium through playwright-core).
// Driven by tests/api/console.rs, which owns the server and the data:
//
//   BASE=http://127.0.0.1:8080 TOKEN=<admin jwt> FLOW=key SUBJECT=alice STEP=verify_email \
//   EXPERIMENT=key SHOTS=target/console-screenshots CHROMIUM=/usr/bin/chromium node console.mjs
//
// Protocol, one JSON object per stdout line:
//   {"event":"ready","percent":0}          the checklist is live at 0 %; the test then
//                                          writes "send" on stdin and sends an event
//   {"event":"progress","percent":50,"ms":…,"reloaded":false,"stepStatus":"COMPLETED"}
//   {"event":"flows",…} {"event":"analytics",…} what the pages show
//   {"event":"done","errors":[…]}          console errors and CSP violations seen
// Exits 1 on any failure (the message on stderr).

import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const { BASE, TOKEN, FLOW, SUBJECT, STEP, EXPERIMENT, SHOTS, CHROMIUM } = process.env;
const LIVE_WITHIN_MS = Number.parseInt(process.env.LIVE_WITHIN_MS ?? '1000', 10);

function say(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

function fail(why) {
  process.stderr.write(`console.mjs: ${why}\n`);
  process.exit(1);
}

for (const [name, value] of Object.entries({ BASE, TOKEN, FLOW, SUBJECT, STEP, SHOTS, CHROMIUM })) {
  if (!value) fail(`set ${name}`);
}

const stdin = createInterface({ input: process.stdin });
const lines = [];
const waiting = [];
stdin.on('line', (line) => (waiting.length ? waiting.shift()(line) : lines.push(line)));
const nextLine = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((resolve) => waiting.push(resolve)));

mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  // Root in a container has no user namespace for the sandbox.
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));

  // Production: no development token, so the console asks for one.
  await page.goto(`${BASE}/console`);
  await page.waitForSelector('#token-input');
  await page.screenshot({ path: join(SHOTS, 'sign-in.png') });
  await page.fill('#token-input', TOKEN);
  await page.click('#sign-in');
  await page.waitForSelector('#nav a.active');

  // (1) The checklist, live.
  const query = new URLSearchParams({ flow: FLOW, subject: SUBJECT });
  await page.goto(`${BASE}/console#/checklist?${query}`);
  await page.waitForSelector('.live[data-state="live"]');
  await page.waitForSelector('#progress[aria-valuenow="0"]');
  await page.evaluate(() => {
    window.consoleTestMarker = 'same document';
  });
  say({ event: 'ready', percent: Number(await page.getAttribute('#progress', 'aria-valuenow')) });

  const line = await nextLine();
  if (line !== 'send') fail(`expected "send" on stdin, got ${JSON.stringify(line)}`);
  const sent = Date.now();
  try {
    await page.waitForSelector('#progress[aria-valuenow="50"]', { timeout: LIVE_WITHIN_MS });
  } catch {
    const now = await page.getAttribute('#progress', 'aria-valuenow');
    fail(`the progress bar did not reach 50 % within ${LIVE_WITHIN_MS} ms of the event (it shows ${now} %)`);
  }
  const ms = Date.now() - sent;
  const reloaded = (await page.evaluate(() => window.consoleTestMarker)) !== 'same document';
  const stepStatus = await page.getAttribute(`.step[data-step="${STEP}"]`, 'data-status');
  const label = await page.textContent('#percent');
  say({ event: 'progress', percent: 50, ms, reloaded, stepStatus, label });
  // Let the bar's transition finish before the picture.
  await page.waitForTimeout(450);
  await page.screenshot({ path: join(SHOTS, 'checklist.png'), fullPage: true });

  // (2) Flows, their versions and definitions.
  await page.goto(`${BASE}/console#/flows?key=${encodeURIComponent(FLOW)}`);
  await page.waitForSelector(`section[data-flow="${FLOW}"] .steps-table`);
  const flows = await page.evaluate(() => ({
    listed: [...document.querySelectorAll('.flow-link')].map((a) => a.dataset.flow),
    versions: [...document.querySelectorAll('.version-tab')].map((a) => Number(a.dataset.version)),
    shownVersion: Number(document.querySelector('section[data-flow]').dataset.version),
    steps: [...document.querySelectorAll('.steps-table tbody tr')].map((tr) => tr.dataset.step),
    definition: JSON.parse(document.querySelector('.definition pre').textContent),
  }));
  await page.screenshot({ path: join(SHOTS, 'flows.png'), fullPage: true });
  say({ event: 'flows', ...flows });

  // (3) Analytics as charts.
  const analyticsQuery = new URLSearchParams({ flow: FLOW, ...(EXPERIMENT ? { experiment: EXPERIMENT } : {}) });
  await page.goto(`${BASE}/console#/analytics?${analyticsQuery}`);
  await page.waitForSelector('#funnel svg .funnel-row[data-step]');
  await page.waitForSelector('#time-series svg .line-starts');
  await page.waitForSelector('#by-version svg .rate-row');
  await page.waitForSelector('.tile');
  if (EXPERIMENT) await page.waitForSelector('#experiment svg .variant-row');
  const analytics = await page.evaluate(() => {
    const rect = (row, cls) => Number(row.querySelector(cls)?.getAttribute('width') ?? 0);
    const total = document.querySelector('#funnel .funnel-row[data-total]');
    return {
      enrolled: Number(total.dataset.total),
      funnel: [...document.querySelectorAll('#funnel .funnel-row[data-step]')].map((row) => ({
        stepKey: row.dataset.step,
        completed: Number(row.dataset.completed),
        reached: Number(row.dataset.reached),
        completedWidth: rect(row, '.bar-completed'),
        reachedWidth: rect(row, '.bar-reached'),
      })),
      seriesStarts: Number(document.querySelector('#time-series .line-starts').dataset.total),
      seriesCompletions: Number(document.querySelector('#time-series .line-completions').dataset.total),
      versions: [...document.querySelectorAll('#by-version .rate-row')].map((g) => g.dataset.group),
      variants: [...document.querySelectorAll('#experiment .variant-row')].map((g) => ({
        name: g.dataset.variant,
        rate: g.dataset.rate === '' ? null : Number(g.dataset.rate),
      })),
      tiles: Object.fromEntries(
        [...document.querySelectorAll('.tile')].map((t) => [t.querySelector('.tile-label').textContent, t.querySelector('.tile-value').textContent]),
      ),
    };
  });
  await page.screenshot({ path: join(SHOTS, 'analytics.png'), fullPage: true });
  say({ event: 'analytics', ...analytics });
  say({ event: 'done', errors });
} catch (error) {
  fail(error.stack ?? String(error));
} finally {
  await browser.close();
  stdin.close();
}
