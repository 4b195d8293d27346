// A small hyperscript: h('div.card', { onclick }, child, ...). Text is always set as text,
// never parsed as HTML, so nothing the server returns can inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (name === 'value' && 'value' in element) {
      element.value = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** 'input#flow.wide' → name input, id flow, classes [wide]. */
function parse(tag) {
  const [head, ...classes] = tag.split('.');
  const [name, id] = head.split('#');
  return { name, id, classes };
}

function isAttrs(value) {
  return value && typeof value === 'object' && !(value instanceof Node) && !Array.isArray(value);
}

/** An HTML element: h('button.primary', { type: 'submit' }, 'Save'). */
export function h(tag, attrs, ...children) {
  const { name, id, classes } = parse(tag);
  const element = document.createElement(name || 'div');
  if (id) element.id = id;
  if (classes.length) element.className = classes.join(' ');
  if (!isAttrs(attrs)) return build(element, {}, [attrs, ...children]);
  return build(element, attrs, children);
}

/** An SVG element: s('rect', { x: 0, y: 0, width: 10, height: 10 }). */
export function s(tag, attrs, ...children) {
  const { name, id, classes } = parse(tag);
  const element = document.createElementNS(SVG_NS, name);
  if (id) element.id = id;
  if (classes.length) element.setAttribute('class', classes.join(' '));
  if (!isAttrs(attrs)) return build(element, {}, [attrs, ...children]);
  return build(element, attrs, children);
}

/** Replaces an element's children. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function percent(rate, digits = 0) {
  return rate === null || rate === undefined ? '—' : `${(rate * 100).toFixed(digits)} %`;
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return '—';
  return Number(value).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function hours(value) {
  if (value === null || value === undefined) return '—';
  if (value < 1) return `${Math.round(value * 60)} min`;
  if (value < 48) return `${value.toFixed(1)} h`;
  return `${(value / 24).toFixed(1)} d`;
}

export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return date.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'UTC' }) + ' UTC';
}

/** A coloured label: badge('COMPLETED'). */
export function badge(text, kind = text) {
  return h(`span.badge.badge-${String(kind).toLowerCase().replace(/[^a-z0-9]+/g, '-')}`, text);
}

/** A message that something went wrong, with the error code when there is one. */
export function problem(error) {
  const code = error?.code ? h('code', error.code) : null;
  return h('div.problem', { role: 'alert' }, code, code ? ' ' : null, error?.message ?? String(error));
}

export function empty(text) {
  return h('p.empty', text);
}
