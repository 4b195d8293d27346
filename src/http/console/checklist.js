// A subject's checklist in one flow, live: the onboardingProgress subscription pushes a
// new snapshot on every change, and the bar and the steps follow without a reload.

import { gql, subscribe } from './api.js';
import { badge, empty, h, problem, replace, s, when } from './dom.js';

const PROGRESS = `subscription($flow: String!, $subject: ID, $workspace: ID) {
  onboardingProgress(flowKey: $flow, subjectId: $subject, workspaceId: $workspace) {
    flowKey version title description scope status variant subjectId workspaceId
    percentComplete completedCount totalCount position points revision startedAt completedAt
    steps { key title description status required skippable available blockedBy points
            completedAt skippedAt skipReason source completedBy }
    nextStep { key }
  }
}`;

const STATE_LABELS = {
  connecting: 'Connecting…',
  live: 'Live',
  retrying: 'Reconnecting…',
  closed: 'Not live',
};

export function render(main, params, ctx) {
  const privileged = ctx.role === 'admin' || ctx.role === 'service';
  const form = toolbar(params, ctx, privileged);
  const body = h('div.checklist-body');
  replace(main, h('div.page-head', h('h1', 'Checklist'), h('p.muted', 'A subject’s progress in a flow, as its app shows it. It updates live.')), form, body);

  if (!params.flow) {
    replace(body, empty('Choose a flow (and, with an admin token, a subject) to watch its checklist.'));
    return null;
  }

  const live = h('span.live', { 'data-state': 'connecting' }, STATE_LABELS.connecting);
  let card = null;
  const updates = h('ol.updates');
  const aside = h(
    'aside.card.updates-card',
    h('h2', 'Updates'),
    h('p.muted.small', 'Each snapshot the server pushed to this page, newest first.'),
    updates,
  );
  replace(body, h('p.empty', 'Waiting for the first snapshot…'));
  const stop = subscribe(
    PROGRESS,
    { flow: params.flow, subject: privileged ? params.subject || null : null, workspace: params.workspace || null },
    {
      next: (data) => {
        const status = data.onboardingProgress;
        if (!card) {
          card = h('div');
          replace(body, h('div.checklist-layout', card, aside));
        }
        replace(card, checklistCard(status, live));
        updates.prepend(
          h(
            'li',
            h('span.update-time', new Date().toLocaleTimeString('en-GB')),
            h('span', `revision ${status.revision}`),
            h('strong', `${status.percentComplete} %`),
          ),
        );
        while (updates.children.length > 12) updates.lastElementChild.remove();
      },
      error: (error) => {
        if (error.code === 'UNAUTHENTICATED') ctx.onUnauthenticated(error);
        else replace(body, problem(error));
      },
      state: (state) => {
        live.dataset.state = state;
        live.textContent = STATE_LABELS[state] ?? state;
      },
    },
  );
  return stop;
}

function toolbar(params, ctx, privileged) {
  const flow = h('input#flow-input', { name: 'flow', list: 'flow-keys', value: params.flow ?? '', placeholder: 'new_user', required: true, autocomplete: 'off' });
  const subject = h('input#subject-input', { name: 'subject', value: params.subject ?? '', placeholder: 'alice', autocomplete: 'off' });
  const workspace = h('input#workspace-input', { name: 'workspace', value: params.workspace ?? '', placeholder: 'optional', autocomplete: 'off' });
  const keys = h('datalist#flow-keys');
  // Admins can list the flows; others type the key.
  if (ctx.role === 'admin') {
    gql('{ flows { key title status } }')
      .then(({ flows }) => {
        const seen = new Set();
        for (const f of flows) {
          if (seen.has(f.key)) continue;
          seen.add(f.key);
          keys.append(h('option', { value: f.key }, f.title));
        }
      })
      .catch(() => {});
  }
  return h(
    'form.toolbar',
    {
      onsubmit: (event) => {
        event.preventDefault();
        ctx.navigate('checklist', { flow: flow.value.trim(), subject: subject.value.trim(), workspace: workspace.value.trim() });
      },
    },
    h('label', h('span', 'Flow'), flow),
    privileged ? h('label', h('span', 'Subject'), subject) : null,
    h('label', h('span', 'Workspace'), workspace),
    keys,
    h('button.primary', { type: 'submit' }, 'Watch'),
  );
}

function checklistCard(status, live) {
  const pct = status.percentComplete;
  const fill = h('div.progress-fill');
  fill.style.width = `${pct}%`;
  const owner = status.workspaceId ? `workspace ${status.workspaceId}` : status.subjectId;
  return h(
    'section.card.checklist',
    { dataset: { revision: status.revision } },
    h(
      'div.checklist-head',
      h('div', h('h2', status.title), status.description ? h('p.muted', status.description) : null),
      live,
    ),
    h(
      'div.meta-row',
      badge(status.status.replace('_', ' '), status.status),
      h('span', `${status.flowKey} v${status.version}`),
      status.variant ? h('span', 'variant ', h('strong', status.variant)) : null,
      owner ? h('span', owner) : null,
    ),
    h(
      'div.progress-block',
      h('div.progress-numbers', h('span#percent.percent', `${pct} %`), h('span.muted', progressText(status))),
      h(
        'div#progress.progress',
        { role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct, 'aria-label': 'Required steps completed' },
        fill,
      ),
    ),
    status.steps.length ? h('ol.steps', status.steps.map((step, i) => stepItem(step, i, status.nextStep?.key === step.key))) : empty('No step applies to this subject.'),
    h(
      'p.footnote',
      `Revision ${status.revision}`,
      status.startedAt ? ` · started ${when(status.startedAt)}` : ' · not started',
      status.completedAt ? ` · completed ${when(status.completedAt)}` : '',
    ),
  );
}

function progressText(status) {
  const parts = [`${status.completedCount} of ${status.totalCount} steps done`];
  if (status.nextStep) parts.push(`step ${status.position} of ${status.totalCount} next`);
  parts.push(`${status.points} points`);
  return parts.join(' · ');
}

/** A step's marker: a tick, a skip arrow, a padlock, or its number. */
function icon(state, index) {
  const draw = {
    completed: () => s('path', { d: 'M5 10.5 8.5 14 15 6.5', fill: 'none', stroke: 'currentColor', 'stroke-width': 2.4, 'stroke-linecap': 'round', 'stroke-linejoin': 'round' }),
    skipped: () => s('path', { d: 'M5 13c1-4 6-6 10-3m0 0V6.5M15 10h-3.5', fill: 'none', stroke: 'currentColor', 'stroke-width': 2, 'stroke-linecap': 'round', 'stroke-linejoin': 'round' }),
    locked: () => [
      s('rect', { x: 5.5, y: 9, width: 9, height: 7, rx: 1.5, fill: 'currentColor' }),
      s('path', { d: 'M7.5 9V7a2.5 2.5 0 0 1 5 0v2', fill: 'none', stroke: 'currentColor', 'stroke-width': 1.8 }),
    ],
  }[state];
  if (!draw) return h('span.step-icon', { 'aria-hidden': 'true' }, String(index + 1));
  return h('span.step-icon', { 'aria-hidden': 'true' }, s('svg', { viewBox: '0 0 20 20', width: 18, height: 18 }, draw()));
}

function stepItem(step, index, isNext) {
  const locked = !step.available && step.status !== 'COMPLETED' && step.status !== 'SKIPPED';
  const state = locked ? 'locked' : step.status.toLowerCase().replace('_', '-');
  const meta = [
    step.required ? 'Required' : 'Optional',
    step.points ? `${step.points} points` : null,
    step.status === 'COMPLETED' ? `completed ${when(step.completedAt)}${step.source ? ` (${step.source.toLowerCase()})` : ''}` : null,
    step.status === 'SKIPPED' ? `skipped${step.skipReason ? `: ${step.skipReason}` : ''}` : null,
    locked ? `waits for ${step.blockedBy.join(', ')}` : null,
  ].filter(Boolean);
  return h(
    `li.step.step-${state}${isNext ? '.step-next' : ''}`,
    { dataset: { step: step.key, status: step.status } },
    icon(state, index),
    h(
      'div.step-text',
      h('div.step-title', step.title, isNext ? h('span.badge.badge-next', 'Next') : null),
      step.description ? h('div.step-description', step.description) : null,
      h('div.step-meta', meta.join(' · ')),
    ),
    h('code.step-key', step.key),
  );
}
