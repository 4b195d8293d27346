// Analytics for one flow: the headline numbers, the funnel, starts and completions over
// time, completion by version and variant, and an experiment's results.

import { gql } from './api.js';
import { empty, h, hours, number, percent, problem, replace } from './dom.js';
import { experimentChart, funnelChart, rateBars, timeSeriesChart } from './charts.js';

const RANGES = {
  '7d': { label: 'Last 7 days', bucket: 'DAY', count: 7 },
  '30d': { label: 'Last 30 days', bucket: 'DAY', count: 30 },
  '12w': { label: 'Last 12 weeks', bucket: 'WEEK', count: 12 },
  '52w': { label: 'Last 52 weeks', bucket: 'WEEK', count: 52 },
};

const STATS = `query($flow: String!, $since: DateTime) {
  flowStats(flowKey: $flow, since: $since) {
    enrolled inProgress completed skipped completionRate medianHoursToComplete p90HoursToComplete
    byVersion { version enrolled completed completionRate }
    byVariant { variant enrolled completed completionRate }
  }
}`;

const FUNNEL = `query($flow: String!, $since: DateTime) {
  funnel(flowKey: $flow, since: $since) {
    flowKey enrolled stepsVersion
    steps { position stepKey title required applied reached completed skipped conversion dropOff dropOffRate medianHours p90Hours }
  }
}`;

const SERIES = `query($flow: String!, $bucket: TimeBucket!, $since: DateTime!, $until: DateTime!) {
  timeSeries(flowKey: $flow, bucket: $bucket, since: $since, until: $until) { start end starts completions }
}`;

const EXPERIMENT = `query($key: String!) {
  experimentResults(key: $key) {
    key flowKey state winner
    variants { name version control exposures completions completionRate confidenceInterval { low high }
               absoluteLift relativeLift pValue warning }
  }
}`;

/** The window [since, until) of `count` whole UTC buckets ending with the current one. */
export function timeWindow(range, now = new Date()) {
  const day = 86_400_000;
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  if (range.bucket === 'DAY') {
    const until = today + day;
    return { since: new Date(until - range.count * day), until: new Date(until) };
  }
  const monday = today - ((new Date(today).getUTCDay() + 6) % 7) * day;
  const until = monday + 7 * day;
  return { since: new Date(until - range.count * 7 * day), until: new Date(until) };
}

/** Charts are drawn at their card's width in pixels, so text keeps its size; a resize redraws them. */
function chartWidth(element) {
  return Math.max(320, Math.floor(element.clientWidth || 760));
}

export function render(main, params, ctx) {
  const rangeKey = RANGES[params.range] ? params.range : '30d';
  const range = RANGES[rangeKey];
  const content = h('div.analytics');
  // Shown once the flows are known (a non-admin token never gets that far).
  const form = h('form.toolbar', { hidden: true });
  replace(main, h('div.page-head', h('h1', 'Analytics'), h('p.muted', 'How enrollments move through a flow, over the chosen window.')), form, content);
  let cancelled = false;
  const redraws = [];
  let resizeTimer = null;
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => redraws.forEach((redraw) => redraw()), 150);
  };
  addEventListener('resize', onResize);
  /** Draws now and again on every resize. */
  const draw = (body, paint) => {
    const redraw = () => replace(body, paint(chartWidth(body)));
    redraws.push(redraw);
    redraw();
  };

  const fail = (target, error) => {
    if (cancelled) return;
    if (error.code === 'UNAUTHENTICATED') ctx.onUnauthenticated(error);
    else replace(target, problem(error.code === 'FORBIDDEN' ? { code: error.code, message: 'Analytics need an admin token.' } : error));
  };

  gql('{ flows { key title } }')
    .then(({ flows }) => {
      if (cancelled) return;
      const keys = [...new Map(flows.map((f) => [f.key, f.title])).entries()];
      const flow = params.flow && keys.some(([k]) => k === params.flow) ? params.flow : keys[0]?.[0];
      buildToolbar(form, keys, flow, rangeKey, params.experiment ?? '', ctx);
      if (!flow) {
        replace(content, empty('No flow is published yet.'));
        return;
      }
      load(content, flow, range, params.experiment, fail, () => cancelled, draw);
    })
    .catch((error) => fail(content, error));

  return () => {
    cancelled = true;
    removeEventListener('resize', onResize);
    clearTimeout(resizeTimer);
  };
}

function buildToolbar(form, keys, flow, rangeKey, experiment, ctx) {
  const flowSelect = h('select#analytics-flow', { name: 'flow' }, keys.map(([k, title]) => h('option', { value: k, selected: k === flow }, `${title} (${k})`)));
  const rangeSelect = h('select#analytics-range', { name: 'range' }, Object.entries(RANGES).map(([k, r]) => h('option', { value: k, selected: k === rangeKey }, r.label)));
  const experimentInput = h('input#analytics-experiment', { name: 'experiment', value: experiment, placeholder: 'experiment key', autocomplete: 'off' });
  const go = () => ctx.navigate('analytics', { flow: flowSelect.value, range: rangeSelect.value, experiment: experimentInput.value.trim() });
  flowSelect.addEventListener('change', go);
  rangeSelect.addEventListener('change', go);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    go();
  });
  form.hidden = false;
  replace(
    form,
    h('label', h('span', 'Flow'), flowSelect),
    h('label', h('span', 'Window'), rangeSelect),
    h('label', h('span', 'Experiment'), experimentInput),
    h('button.primary', { type: 'submit' }, 'Show'),
  );
}

function card(title, subtitle, id) {
  const body = h('div.card-body', h('p.empty', 'Loading…'));
  const section = h('section.card', { id }, h('div.card-head', h('h2', title), subtitle ? h('span.muted', subtitle) : null), body);
  return { section, body };
}

function load(content, flow, range, experimentKey, fail, isCancelled, draw) {
  const { since, until } = timeWindow(range);
  const sinceIso = since.toISOString();
  const tiles = h('div.tiles', h('p.empty', 'Loading…'));
  const funnel = card('Funnel', `enrollments started since ${sinceIso.slice(0, 10)}`, 'funnel');
  const series = card('Starts and completions', range.label.toLowerCase(), 'time-series');
  const versions = card('Completion by version', null, 'by-version');
  const variants = card('Completion by variant', null, 'by-variant');
  const experiment = card('Experiment', experimentKey ? experimentKey : null, 'experiment');
  replace(content, tiles, funnel.section, series.section, h('div.two-columns', versions.section, variants.section), experiment.section);

  gql(STATS, { flow, since: sinceIso })
    .then(({ flowStats: stats }) => {
      if (isCancelled()) return;
      replace(
        tiles,
        tile('Enrolled', number(stats.enrolled)),
        tile('In progress', number(stats.inProgress)),
        tile('Completed', number(stats.completed)),
        tile('Completion rate', percent(stats.completionRate, 1)),
        tile('Median time to complete', hours(stats.medianHoursToComplete)),
        tile('90th percentile', hours(stats.p90HoursToComplete)),
      );
      draw(versions.body, (w) => (stats.byVersion.length ? rateBars(stats.byVersion, (g) => `version ${g.version}`, w) : empty('No enrollments.')));
      draw(variants.body, (w) => (stats.byVariant.length ? rateBars(stats.byVariant, (g) => g.variant ?? 'no experiment', w) : empty('No enrollments.')));
    })
    .catch((error) => {
      fail(tiles, error);
      replace(versions.body);
      replace(variants.body);
    });

  gql(FUNNEL, { flow, since: sinceIso })
    .then(({ funnel: f }) => {
      if (isCancelled()) return;
      const chart = h('div');
      const details = funnelTable(f);
      replace(
        funnel.body,
        chart,
        h('div.legend', legend('bar-total', 'enrolled'), legend('bar-reached', 'reached the step'), legend('bar-completed', 'completed it')),
        details,
      );
      draw(chart, (w) => (f.enrolled ? funnelChart(f, w) : empty('No enrollments in this window.')));
    })
    .catch((error) => fail(funnel.body, error));

  gql(SERIES, { flow, bucket: range.bucket, since: sinceIso, until: until.toISOString() })
    .then(({ timeSeries }) => {
      if (isCancelled()) return;
      draw(series.body, (w) => timeSeriesChart(timeSeries, range.bucket, w));
    })
    .catch((error) => fail(series.body, error));

  if (!experimentKey) {
    replace(experiment.body, empty('Enter an experiment key above to compare its variants on completion.'));
  } else {
    gql(EXPERIMENT, { key: experimentKey })
      .then(({ experimentResults: r }) => {
        if (isCancelled()) return;
        const chart = h('div');
        replace(experiment.body, experimentView(r, chart));
        draw(chart, (w) => experimentChart(r.variants, w));
      })
      .catch((error) => fail(experiment.body, error));
  }
}

function tile(label, value) {
  return h('div.tile', h('div.tile-value', value), h('div.tile-label', label));
}

function legend(cls, label) {
  return h('span.legend-item', h(`span.swatch.${cls}`), label);
}

function funnelTable(f) {
  return h(
    'details.funnel-details',
    h('summary', `Step details (steps of version ${f.stepsVersion})`),
    h(
      'div.table-wrap',
      h(
        'table',
        h('thead', h('tr', ['Step', 'Applied', 'Reached', 'Completed', 'Skipped', 'Conversion', 'Drop-off', 'Median', 'p90'].map((c) => h('th', c)))),
        h(
          'tbody',
          f.steps.map((st) =>
            h(
              'tr',
              h('td', `${st.position}. ${st.title}`, st.required ? null : h('span.muted', ' (optional)')),
              h('td.num', number(st.applied)),
              h('td.num', number(st.reached)),
              h('td.num', number(st.completed)),
              h('td.num', number(st.skipped)),
              h('td.num', percent(st.conversion, 1)),
              h('td.num', `${number(st.dropOff)} (${percent(st.dropOffRate, 1)})`),
              h('td.num', hours(st.medianHours)),
              h('td.num', hours(st.p90Hours)),
            ),
          ),
        ),
      ),
    ),
  );
}

/** The results table around `chart`, the place for the interval chart. */
function experimentView(r, chart) {
  const signed = (v, digits = 1) => (v === null || v === undefined ? '—' : `${v > 0 ? '+' : ''}${(v * 100).toFixed(digits)}`);
  return h(
    'div',
    h('p.muted', `Flow ${r.flowKey} · state ${r.state.toLowerCase()}${r.winner ? ` · winner ${r.winner}` : ''}`),
    chart,
    h(
      'div.table-wrap',
      h(
        'table',
        h('thead', h('tr', ['Variant', 'Version', 'Exposures', 'Completions', 'Rate', '95 % interval', 'Lift (points)', 'Relative lift', 'p-value'].map((c) => h('th', c)))),
        h(
          'tbody',
          r.variants.map((v) =>
            h(
              'tr',
              { dataset: { variant: v.name } },
              h('td', v.name, v.control ? h('span.muted', ' (control)') : null),
              h('td.num', `v${v.version}`),
              h('td.num', number(v.exposures)),
              h('td.num', number(v.completions)),
              h('td.num', percent(v.completionRate, 1)),
              h('td.num', v.confidenceInterval ? `${percent(v.confidenceInterval.low, 1)} – ${percent(v.confidenceInterval.high, 1)}` : '—'),
              h('td.num', signed(v.absoluteLift)),
              h('td.num', v.relativeLift === null ? '—' : `${signed(v.relativeLift)} %`),
              h('td.num', v.pValue === null ? '—' : v.pValue < 0.001 ? '< 0.001' : v.pValue.toFixed(3)),
            ),
          ),
        ),
      ),
    ),
    r.variants.filter((v) => v.warning).map((v) => h('p.warning', h('strong', `${v.name}: `), v.warning)),
  );
}
