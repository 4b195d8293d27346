// Hand-drawn SVG charts: a funnel, a time series, rate bars and an experiment's
// confidence intervals. Each returns an <svg> sized by its viewBox (CSS makes it fluid);
// colours come from console.css. Data attributes carry the numbers drawn, so a test can
// read what a chart shows.

import { s, number, percent } from './dom.js';

const FONT = 12;

/** Round tick values covering [0, max]. */
export function ticks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((m) => m >= raw);
  const out = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  if (out[out.length - 1] < max) out.push(Number((out[out.length - 1] + step).toPrecision(12)));
  return out;
}

function svg(width, height, label, ...children) {
  return s(
    'svg.chart',
    { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, preserveAspectRatio: 'xMinYMin meet' },
    s('title', label),
    ...children,
  );
}

function text(x, y, content, attrs = {}) {
  return s('text', { x, y, 'font-size': FONT, ...attrs }, content);
}

function truncate(value, max) {
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}

/**
 * The funnel: one row per step, the bar of enrollments that reached it behind the bar of
 * those that completed it, both against the enrolled total.
 */
export function funnelChart(funnel, width = 760) {
  const labelWidth = Math.min(230, Math.round(width * 0.28));
  const valueWidth = 150;
  const rowHeight = 38;
  const top = 8;
  const rows = [{ title: 'Enrolled', stepKey: null, reached: funnel.enrolled, completed: funnel.enrolled }, ...funnel.steps];
  const height = top + rows.length * rowHeight + 4;
  const scaleMax = Math.max(1, funnel.enrolled, ...funnel.steps.map((st) => Math.max(st.reached, st.completed)));
  const barArea = width - labelWidth - valueWidth;
  const x = (v) => labelWidth + (v / scaleMax) * barArea;

  const children = rows.map((row, i) => {
    const y = top + i * rowHeight;
    const isTotal = row.stepKey === null;
    const label = isTotal ? 'Enrolled' : `${row.position}. ${truncate(row.title, Math.floor(labelWidth / 7.2))}`;
    const detail = isTotal
      ? `${number(funnel.enrolled)} enrollments`
      : `${number(row.completed)} of ${number(row.reached)} · ${percent(row.conversion)}`;
    return s(
      'g.funnel-row',
      { dataset: isTotal ? { total: funnel.enrolled } : { step: row.stepKey, completed: row.completed, reached: row.reached } },
      text(labelWidth - 10, y + rowHeight / 2 + 4, label, { 'text-anchor': 'end', class: isTotal ? 'label strong' : 'label' }),
      s('rect.track', { x: labelWidth, y: y + 6, width: barArea, height: rowHeight - 12, rx: 4 }),
      isTotal
        ? s('rect.bar-total', { x: labelWidth, y: y + 6, width: Math.max(0, x(row.completed) - labelWidth), height: rowHeight - 12, rx: 4 })
        : [
            s('rect.bar-reached', { x: labelWidth, y: y + 6, width: Math.max(0, x(row.reached) - labelWidth), height: rowHeight - 12, rx: 4 }),
            s('rect.bar-completed', { x: labelWidth, y: y + 6, width: Math.max(0, x(row.completed) - labelWidth), height: rowHeight - 12, rx: 4 }),
          ],
      text(width - valueWidth + 10, y + rowHeight / 2 + 4, detail, { class: 'value' }),
    );
  });
  return svg(width, height, `Funnel of ${funnel.flowKey}`, ...children);
}

/** Starts and completions per bucket, as two lines over a shared time axis. */
export function timeSeriesChart(buckets, bucketName, width = 760) {
  const height = 272;
  const pad = { left: 44, right: 16, top: 14, bottom: 54 };
  const max = Math.max(1, ...buckets.map((b) => Math.max(b.starts, b.completions)));
  const yTicks = ticks(max);
  const yMax = yTicks[yTicks.length - 1];
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const n = buckets.length;
  const xAt = (i) => pad.left + (n <= 1 ? plotW / 2 : (i / (n - 1)) * plotW);
  const yAt = (v) => pad.top + plotH - (v / yMax) * plotH;

  const grid = yTicks.map((t) =>
    s('g', {},
      s('line.grid', { x1: pad.left, x2: width - pad.right, y1: yAt(t), y2: yAt(t) }),
      text(pad.left - 8, yAt(t) + 4, number(t), { 'text-anchor': 'end', class: 'axis' }),
    ),
  );
  const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(plotW / 70))));
  const xLabels = buckets.map((b, i) => {
    if (i % every !== 0 && i !== n - 1) return null;
    if (i !== n - 1 && n - 1 - i < every / 2) return null;
    const date = new Date(b.start);
    const label = date.toLocaleDateString('en-GB', { day: 'numeric', month: 'short', timeZone: 'UTC' });
    return text(xAt(i), height - pad.bottom + 18, label, { 'text-anchor': 'middle', class: 'axis' });
  });
  const path = (key) => buckets.map((b, i) => `${i ? 'L' : 'M'}${xAt(i).toFixed(1)},${yAt(b[key]).toFixed(1)}`).join(' ');
  const area = n
    ? `${path('starts')} L${xAt(n - 1).toFixed(1)},${yAt(0)} L${xAt(0).toFixed(1)},${yAt(0)} Z`
    : '';
  const dots = (key, cls) =>
    n <= 60 ? buckets.map((b, i) => s(`circle.${cls}`, { cx: xAt(i), cy: yAt(b[key]), r: 2.6 }, s('title', `${b.start.slice(0, 10)}: ${b[key]} ${key}`))) : [];
  const legend = s('g', { transform: `translate(${pad.left}, ${height - 10})` },
    s('rect.swatch-starts', { x: 0, y: -9, width: 12, height: 4, rx: 2 }),
    text(18, -3, 'Enrollments started', { class: 'axis' }),
    s('rect.swatch-completions', { x: 150, y: -9, width: 12, height: 4, rx: 2 }),
    text(168, -3, 'Completed', { class: 'axis' }),
    text(plotW, -3, `per ${bucketName.toLowerCase()} (UTC)`, { 'text-anchor': 'end', class: 'axis' }),
  );
  const total = (key) => buckets.reduce((sum, b) => sum + b[key], 0);
  return svg(
    width,
    height,
    'Enrollments started and completed over time',
    ...grid,
    ...xLabels,
    n ? s('path.area-starts', { d: area }) : null,
    n ? s('path.line-starts', { d: path('starts'), dataset: { total: total('starts') } }) : null,
    n ? s('path.line-completions', { d: path('completions'), dataset: { total: total('completions') } }) : null,
    ...dots('starts', 'dot-starts'),
    ...dots('completions', 'dot-completions'),
    legend,
  );
}

/** Completion rate per group (version or variant), with the counts behind it. */
export function rateBars(groups, labelOf, width = 760) {
  const labelWidth = Math.min(150, Math.round(width * 0.24));
  const valueWidth = 150;
  const rowHeight = 32;
  const height = Math.max(1, groups.length) * rowHeight + 6;
  const barArea = width - labelWidth - valueWidth;
  const rows = groups.map((g, i) => {
    const y = 3 + i * rowHeight;
    const rate = g.completionRate ?? 0;
    return s('g.rate-row', { dataset: { group: labelOf(g), rate: g.completionRate ?? '' } },
      text(labelWidth - 10, y + rowHeight / 2 + 4, truncate(labelOf(g), Math.floor(labelWidth / 7.2)), { 'text-anchor': 'end', class: 'label' }),
      s('rect.track', { x: labelWidth, y: y + 7, width: barArea, height: rowHeight - 14, rx: 4 }),
      s('rect.bar-rate', { x: labelWidth, y: y + 7, width: rate * barArea, height: rowHeight - 14, rx: 4 }),
      text(width - valueWidth + 10, y + rowHeight / 2 + 4,
        `${percent(g.completionRate, 1)} · ${number(g.completed)} of ${number(g.enrolled)}`, { class: 'value' }),
    );
  });
  return svg(width, height, 'Completion rate by group', ...rows);
}

/** Round rates (steps of 1, 2, 2.5, 5, 10, 20, 25 %…) within [low, high]. */
function rateTicks(low, high) {
  const raw = (high - low) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((m) => m >= raw);
  const out = [];
  for (let v = Math.ceil(low / step - 1e-9) * step; v <= high + 1e-9; v += step) out.push(Number(v.toPrecision(10)));
  return out;
}

/**
 * An experiment's variants: each completion rate as a dot on its 95% confidence
 * interval, on an axis zoomed to the intervals, the control's rate as a dashed line.
 */
export function experimentChart(variants, width = 760) {
  const labelWidth = Math.min(180, Math.round(width * 0.24));
  const valueWidth = 190;
  const rowHeight = 40;
  const top = 10;
  const axisHeight = 26;
  const height = top + variants.length * rowHeight + axisHeight;
  const withData = variants.filter((v) => v.confidenceInterval);
  let low = Math.min(...withData.map((v) => v.confidenceInterval.low), 1);
  let high = Math.max(...withData.map((v) => v.confidenceInterval.high), 0);
  if (!withData.length) [low, high] = [0, 1];
  const padding = Math.max(0.02, (high - low) * 0.1);
  low = Math.max(0, low - padding);
  high = Math.min(1, high + padding);
  if (high - low < 0.05) [low, high] = [Math.max(0, low - 0.025), Math.min(1, high + 0.025)];
  const plotW = width - labelWidth - valueWidth;
  const xAt = (v) => labelWidth + ((v - low) / (high - low)) * plotW;
  const axisY = top + variants.length * rowHeight;
  const axisTicks = rateTicks(low, high);
  // Whole percentages print without decimals.
  const axisDigits = axisTicks.every((t) => Math.abs(t * 100 - Math.round(t * 100)) < 1e-6) ? 0 : 1;
  const control = variants.find((v) => v.control);

  const rows = variants.map((v, i) => {
    const y = top + i * rowHeight + rowHeight / 2;
    const ci = v.confidenceInterval;
    return s(`g.variant-row${v.control ? '.control' : ''}`, { dataset: { variant: v.name, rate: v.completionRate ?? '' } },
      text(labelWidth - 10, y + 4, truncate(v.name, Math.floor(labelWidth / 7.2) - (v.control ? 10 : 0)) + (v.control ? ' (control)' : ''), { 'text-anchor': 'end', class: 'label' }),
      ci ? s('line.ci', { x1: xAt(ci.low), x2: xAt(ci.high), y1: y, y2: y }) : null,
      ci ? s('line.ci-cap', { x1: xAt(ci.low), x2: xAt(ci.low), y1: y - 6, y2: y + 6 }) : null,
      ci ? s('line.ci-cap', { x1: xAt(ci.high), x2: xAt(ci.high), y1: y - 6, y2: y + 6 }) : null,
      v.completionRate !== null ? s('circle.rate-dot', { cx: xAt(v.completionRate), cy: y, r: 5.5 }) : null,
      text(width - valueWidth + 10, y + 4,
        v.completionRate === null ? 'no exposures' : `${percent(v.completionRate, 1)} [${percent(ci.low, 1)}, ${percent(ci.high, 1)}]`,
        { class: 'value' }),
    );
  });
  return svg(
    width,
    height,
    'Experiment completion rates with 95% confidence intervals',
    ...axisTicks.map((t) => s('g', {},
      s('line.grid', { x1: xAt(t), x2: xAt(t), y1: top, y2: axisY }),
      text(xAt(t), axisY + 18, percent(t, axisDigits), { 'text-anchor': 'middle', class: 'axis' }),
    )),
    control?.completionRate != null
      ? s('line.control-rate', { x1: xAt(control.completionRate), x2: xAt(control.completionRate), y1: top, y2: axisY })
      : null,
    ...rows,
  );
}
