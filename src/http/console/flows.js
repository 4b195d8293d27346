// Flows: every key with its versions, and a version's definition as a table of steps and
// as the stored JSON.

import { gql } from './api.js';
import { badge, empty, h, problem, replace, when } from './dom.js';

const FLOWS = `{ flows { key version title description status scope createdAt definition } }`;

export function render(main, params, ctx) {
  const list = h('div.flow-list');
  const detail = h('div.flow-detail');
  replace(
    main,
    h('div.page-head', h('h1', 'Flows'), h('p.muted', 'Published flows and every version of each. Enrollments stay on the version they started on.')),
    h('div.flows-layout', list, detail),
  );
  replace(list, h('p.empty', 'Loading flows…'));
  let cancelled = false;
  gql(FLOWS)
    .then(({ flows }) => {
      if (cancelled) return;
      const byKey = new Map();
      for (const flow of flows) {
        if (!byKey.has(flow.key)) byKey.set(flow.key, []);
        byKey.get(flow.key).push(flow);
      }
      if (!byKey.size) {
        replace(list, empty('No flow is published yet. Publish one with the publishFlow mutation.'));
        replace(detail);
        return;
      }
      const key = byKey.has(params.key) ? params.key : byKey.keys().next().value;
      const versions = byKey.get(key).sort((a, b) => a.version - b.version);
      const newest = versions[versions.length - 1];
      const chosen = versions.find((v) => String(v.version) === params.version) ?? newest;
      replace(list, [...byKey.entries()].map(([k, vs]) => flowLink(k, vs, k === key, ctx)));
      replace(detail, flowDetail(versions, chosen, ctx));
    })
    .catch((error) => {
      if (cancelled) return;
      if (error.code === 'UNAUTHENTICATED') ctx.onUnauthenticated(error);
      else replace(list, problem(error.code === 'FORBIDDEN' ? { code: error.code, message: 'Flows need an admin token.' } : error));
    });
  return () => {
    cancelled = true;
  };
}

function flowLink(key, versions, active, ctx) {
  const newest = versions.reduce((a, b) => (a.version > b.version ? a : b));
  const activeCount = versions.filter((v) => v.status === 'ACTIVE').length;
  return h(
    `a.flow-link${active ? '.active' : ''}`,
    { href: `#/flows?key=${encodeURIComponent(key)}`, dataset: { flow: key } },
    h('span.flow-link-title', newest.title),
    h('code', key),
    h('span.flow-link-meta', `${versions.length} version${versions.length === 1 ? '' : 's'} · ${activeCount} active · ${newest.scope.toLowerCase()}`),
  );
}

function flowDetail(versions, flow, ctx) {
  const steps = flow.definition?.steps ?? [];
  return h(
    'section.card',
    { dataset: { flow: flow.key, version: flow.version } },
    h(
      'div.detail-head',
      h('div', h('h2', flow.title), h('code', flow.key)),
      h(
        'div.detail-links',
        h('a.button', { href: `#/analytics?flow=${encodeURIComponent(flow.key)}` }, 'Analytics'),
        h('a.button', { href: `#/checklist?flow=${encodeURIComponent(flow.key)}` }, 'Watch a checklist'),
      ),
    ),
    flow.description ? h('p', flow.description) : null,
    h(
      'div.version-tabs',
      { role: 'tablist', 'aria-label': 'Versions' },
      versions.map((v) =>
        h(
          `a.version-tab${v.version === flow.version ? '.active' : ''}`,
          { href: `#/flows?key=${encodeURIComponent(v.key)}&version=${v.version}`, role: 'tab', 'aria-selected': v.version === flow.version ? 'true' : 'false', dataset: { version: v.version } },
          `v${v.version}`,
          badge(v.status),
        ),
      ),
    ),
    h(
      'dl.facts',
      h('dt', 'Status'), h('dd', badge(flow.status)),
      h('dt', 'Scope'), h('dd', flow.scope === 'WORKSPACE' ? 'One progress per workspace' : 'One progress per user'),
      h('dt', 'Published'), h('dd', when(flow.createdAt)),
      h('dt', 'Audience'), h('dd', flow.definition?.audience ? h('code', condition(flow.definition.audience)) : 'Anyone who enrolls'),
    ),
    h('h3', `Steps (${steps.length})`),
    h(
      'div.table-wrap',
      h(
        'table.steps-table',
        h('thead', h('tr', ['#', 'Step', 'Required', 'Depends on', 'Trigger', 'Condition', 'Points'].map((c) => h('th', c)))),
        h(
          'tbody',
          steps.map((step, i) =>
            h(
              'tr',
              { dataset: { step: step.key } },
              h('td.num', String(i + 1)),
              h('td', h('div.step-title', step.title), h('code', step.key), step.description ? h('div.muted.small', step.description) : null),
              h('td', step.required ? 'Required' : step.skippable ? 'Optional, skippable' : 'Optional'),
              h('td', (step.dependsOn ?? []).length ? step.dependsOn.map((d) => h('code.chip', d)) : '—'),
              h('td', step.trigger ? [h('code', step.trigger.event), step.trigger.where ? h('div.muted.small', 'where ', condition(step.trigger.where)) : null] : '—'),
              h('td', step.condition ? h('code.small', condition(step.condition)) : 'Always'),
              h('td.num', String(step.points ?? 0)),
            ),
          ),
        ),
      ),
    ),
    h('details.definition', { open: true }, h('summary', 'Definition (as stored)'), h('pre', JSON.stringify(flow.definition, null, 2))),
  );
}

/** A condition in one line: `plan eq "team" and not (role in ["guest"])`. */
export function condition(c, depth = 0) {
  if (!c || typeof c !== 'object') return JSON.stringify(c);
  if (depth > 8) return '…';
  const wrap = (text) => (depth > 0 ? `(${text})` : text);
  if (Array.isArray(c.all)) return wrap(c.all.map((x) => condition(x, depth + 1)).join(' and ') || 'true');
  if (Array.isArray(c.any)) return wrap(c.any.map((x) => condition(x, depth + 1)).join(' or ') || 'false');
  if (c.not) return `not ${condition(c.not, depth + 1)}`;
  if (c.attr) return `${c.attr} ${c.op ?? 'eq'}${c.value === undefined ? '' : ` ${JSON.stringify(c.value)}`}`;
  return JSON.stringify(c);
}
