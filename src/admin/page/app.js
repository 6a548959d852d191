// Settings → API: the page over the admin JSON API. Plain DOM, no framework, no build step.
// Everything from the API is put in the page with textContent, never as HTML, and a new key's
// plaintext lives only in the read-only field of the new-key panel until "Done".
'use strict';

// Counts script errors and CSP violations, so that a test (or a person) can see there were none.
const body = document.body;
function countError() {
  body.dataset.errors = String(Number(body.dataset.errors || 0) + 1);
}
window.addEventListener('error', countError);
window.addEventListener('unhandledrejection', countError);
document.addEventListener('securitypolicyviolation', countError);

const base = body.dataset.base || '';
const OUTCOME_LABELS = {
  allowed: 'Allowed',
  insufficient_scope: 'Missing permission',
  revoked: 'Revoked key',
  expired: 'Expired key',
  rate_limited: 'Rate limited',
};
const $ = (id) => document.getElementById(id);
let nextCursor = null;
let auditKey = null;
let auditBefore = null;

// ----- helpers ---------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'text') node.textContent = value;
    else if (name === 'class') node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// "2026-12-02T04:40:07Z" → "2026-12-02 04:40 UTC" (with the seconds if asked); null → `none`.
function when(iso, none, seconds) {
  if (!iso) return none;
  return iso.slice(0, 10) + ' ' + iso.slice(11, seconds ? 19 : 16) + ' UTC';
}

function say(message, isError) {
  const status = $('status');
  status.textContent = message;
  status.classList.toggle('error', Boolean(isError));
}

// A call to the admin API: the parsed JSON, or an Error carrying the problem+json fields.
async function api(path, method, payload) {
  const init = { method: method || 'GET', credentials: 'same-origin', headers: {} };
  if (payload !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(payload);
  }
  init.headers.Accept = 'application/json';
  const response = await fetch(base + '/v1' + path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const problem = data || {};
    let message = problem.title || response.statusText || 'Request failed';
    if (problem.detail) message += ': ' + problem.detail;
    if (response.status === 401) message = 'You are not signed in any more: reload the page to sign in.';
    const error = new Error(message);
    error.status = response.status;
    error.fields = Array.isArray(problem.errors) ? problem.errors : [];
    throw error;
  }
  return data;
}

function fail(error) {
  say(error.message, true);
}

// ----- who, scopes, environments -----------------------------------------------------------------

async function loadMe() {
  const me = await api('/me');
  $('who').textContent = me.actor;
}

async function loadScopes() {
  const catalogue = await api('/scopes');
  const groups = new Map();
  for (const scope of catalogue.scopes) {
    if (!groups.has(scope.resource)) groups.set(scope.resource, []);
    groups.get(scope.resource).push(scope);
  }
  const container = $('scope-groups');
  container.replaceChildren();
  for (const [resource, scopes] of groups) {
    const list = el('ul', { class: 'scopes' });
    for (const scope of scopes) {
      const id = 'scope-' + scope.name.replace(/[^a-z0-9]/gi, '-');
      const box = el('input', { type: 'checkbox', id, name: 'scopes', value: scope.name });
      box.setAttribute('aria-describedby', id + '-desc');
      list.append(el('li', {},
        box,
        el('label', { for: id }, el('code', { text: scope.name })),
        el('span', { class: 'desc', id: id + '-desc', text: scope.description })));
    }
    container.append(el('div', { class: 'scope-group', role: 'group', 'aria-label': resource },
      el('h3', { text: resource.charAt(0).toUpperCase() + resource.slice(1) }), list));
  }
  const environments = $('environments');
  environments.replaceChildren();
  catalogue.environments.forEach((name, index) => {
    const radio = el('input', { type: 'radio', id: 'env-' + name, name: 'environment', value: name });
    radio.checked = index === 0;
    const label = name === 'live' ? 'live: production data' : name === 'test' ? 'test: sandbox data only' : name;
    environments.append(el('span', { class: 'choice' }, radio, el('label', { for: 'env-' + name, text: label })));
  });
}

// ----- creating a key --------------------------------------------------------------------------

function clearFieldErrors() {
  for (const node of document.querySelectorAll('.field-error')) node.textContent = '';
  for (const node of document.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
}

function showFieldErrors(fields) {
  let unplaced = [];
  for (const { field, message } of fields) {
    // "scopes[1]" belongs next to the scopes; an unknown field goes to the status region.
    const name = String(field).split(/[.[]/)[0];
    const slot = document.querySelector('.field-error[data-field="' + CSS.escape(name) + '"]');
    if (!slot) {
      unplaced.push(field + ': ' + message);
      continue;
    }
    slot.textContent = slot.textContent ? slot.textContent + ' ' + message : message;
    const input = name === 'name' ? $('key-name') : name === 'expires_at' ? $('key-expires') : null;
    if (input) input.setAttribute('aria-invalid', 'true');
  }
  return unplaced;
}

async function createKey(event) {
  event.preventDefault();
  clearFieldErrors();
  const form = $('create-form');
  const name = $('key-name').value.trim();
  const scopes = [...form.querySelectorAll('input[name="scopes"]:checked')].map((box) => box.value);
  const environment = (form.querySelector('input[name="environment"]:checked') || {}).value;
  const day = $('key-expires').value;
  const payload = { name, environment, scopes, expires_at: day ? day + 'T23:59:59Z' : null };
  $('create-submit').disabled = true;
  try {
    const created = await api('/keys', 'POST', payload);
    form.reset();
    const first = form.querySelector('input[name="environment"]');
    if (first) first.checked = true;
    showSecret(created.secret, created.key, 'Key "' + created.key.name + '" created.');
    await reloadKeys();
  } catch (error) {
    const unplaced = showFieldErrors(error.fields || []);
    say(error.message + (unplaced.length ? ' ' + unplaced.join('; ') : ''), true);
    const invalid = document.querySelector('[aria-invalid="true"]');
    if (invalid) invalid.focus();
  } finally {
    $('create-submit').disabled = false;
  }
}

// ----- the new key, shown once -----------------------------------------------------------------

function showSecret(secret, key, message) {
  $('new-key-name').textContent = key.name + ' (' + key.environment + ')';
  const field = $('new-key-secret');
  field.value = secret;
  $('new-key-panel').hidden = false;
  say(message + ' Copy the key now: it will not be shown again.');
  field.focus();
  field.select();
}

async function copySecret() {
  const field = $('new-key-secret');
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
    await navigator.clipboard.writeText(field.value);
    say('Key copied to the clipboard.');
  } catch (_) {
    field.focus();
    field.select();
    const copied = document.execCommand && document.execCommand('copy');
    say(copied ? 'Key copied to the clipboard.' : 'Select the key and copy it (Ctrl+C).', !copied);
  }
}

function hideSecret() {
  // Gone from the DOM, not just hidden.
  $('new-key-secret').value = '';
  $('new-key-secret').removeAttribute('value');
  $('new-key-name').textContent = '';
  $('new-key-panel').hidden = true;
  say('The key is no longer shown.');
  $('key-name').focus();
}

// ----- the list --------------------------------------------------------------------------------

function keyRow(key) {
  const cell = (label, ...content) => el('td', { 'data-label': label }, ...content);
  const scopes = el('ul', { class: 'scope-list' });
  for (const scope of key.scopes) scopes.append(el('li', {}, el('code', { text: scope })));
  const actions = el('div', { class: 'actions' });
  const button = (label, action, disabled) => {
    const b = el('button', { type: 'button', 'data-action': action, 'data-key': key.id, text: label });
    b.setAttribute('aria-label', label + ' ' + key.name);
    b.disabled = Boolean(disabled);
    actions.append(b);
  };
  const dead = key.status === 'revoked' || key.status === 'expired';
  button('Revoke', 'revoke', dead);
  button('Rotate', 'rotate', key.status !== 'active');
  button('Usage', 'usage');
  button('Activity', 'audit');
  let status = key.status;
  if (key.status === 'rotated' && key.expires_at) status += ' (until ' + when(key.expires_at) + ')';
  const row = el('tr', { 'data-key': key.id, 'data-name': key.name, 'data-status': key.status },
    el('th', { scope: 'row', 'data-label': 'Name', text: key.name }),
    cell('Key', el('code', { text: key.hint })),
    cell('Environment', el('span', { class: 'env env-' + key.environment, text: key.environment })),
    cell('Permissions', scopes),
    cell('Created', when(key.created_at, '')),
    cell('Expires', when(key.expires_at, 'never')),
    cell('Last used', when(key.last_used_at, 'never')),
    cell('Status', el('span', { class: 'badge status-' + key.status, text: status })),
    cell('Actions', actions));
  return row;
}

async function loadKeys(cursor) {
  const query = '?limit=20' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
  const page = await api('/keys' + query);
  const rows = $('keys-body');
  for (const key of page.keys) rows.append(keyRow(key));
  nextCursor = page.next_cursor;
  $('load-more').hidden = !nextCursor;
  $('keys-empty').hidden = rows.children.length > 0;
}

async function reloadKeys() {
  $('keys-body').replaceChildren();
  await loadKeys(null);
}

async function onKeyAction(event) {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const row = button.closest('tr');
  const id = button.dataset.key;
  const name = row.dataset.name;
  const path = '/keys/' + encodeURIComponent(id);
  try {
    if (button.dataset.action === 'revoke') {
      if (!window.confirm('Revoke the key "' + name + '"? Every request with it will be refused at once. This cannot be undone.')) return;
      await api(path + '/revoke', 'POST', {});
      await reloadKeys();
      say('Key "' + name + '" revoked.');
    } else if (button.dataset.action === 'rotate') {
      if (!window.confirm('Rotate the key "' + name + '"? You get a new key; the old one keeps working for 24 hours, then stops.')) return;
      const rotated = await api(path + '/rotate', 'POST', { grace_seconds: 86400 });
      await reloadKeys();
      showSecret(rotated.secret, rotated.key, 'Key "' + name + '" rotated: the old key works for 24 more hours.');
    } else if (button.dataset.action === 'usage') {
      await showUsage(id, name);
    } else if (button.dataset.action === 'audit') {
      await showAudit(id, name);
    }
  } catch (error) {
    fail(error);
  }
}

// ----- usage -----------------------------------------------------------------------------------

function usageChart(usage) {
  const width = 900;
  const height = 220;
  const top = 10;
  const left = 36;
  const bottom = 24;
  const plot = height - top - bottom;
  const totals = usage.days.map((day) => usage.outcomes.reduce((sum, o) => sum + (day[o] || 0), 0));
  // An even top, so that the middle grid line falls on a whole number of requests.
  const max = Math.max(2, Math.ceil(Math.max(...totals) / 2) * 2);
  const slot = (width - left) / Math.max(1, usage.days.length);
  const chart = svg('svg', { viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-labelledby': 'usage-svg-title', class: 'usage-svg' });
  const title = svg('title', { id: 'usage-svg-title' });
  const all = totals.reduce((a, b) => a + b, 0);
  title.textContent = 'Requests per day from ' + usage.from + ' to ' + usage.to + ', by outcome: ' + all + ' in all';
  chart.append(title);
  for (const fraction of [0, 0.5, 1]) {
    const y = top + plot - fraction * plot;
    chart.append(svg('line', { x1: left, x2: width, y1: y, y2: y, class: 'grid' }));
    const label = svg('text', { x: left - 4, y: y + 4, class: 'axis', 'text-anchor': 'end' });
    label.textContent = String(Math.round(fraction * max));
    chart.append(label);
  }
  usage.days.forEach((day, index) => {
    let y = top + plot;
    const x = left + index * slot + slot * 0.15;
    for (const outcome of usage.outcomes) {
      const count = day[outcome] || 0;
      if (!count) continue;
      const h = (count / max) * plot;
      y -= h;
      const bar = svg('rect', { x, y, width: slot * 0.7, height: h, class: 'o-' + outcome });
      const tip = svg('title', {});
      tip.textContent = day.day + ': ' + count + ' ' + (OUTCOME_LABELS[outcome] || outcome);
      bar.append(tip);
      chart.append(bar);
    }
    if (index === 0 || index === usage.days.length - 1) {
      const label = svg('text', { x: x + slot * 0.35, y: height - 6, class: 'axis', 'text-anchor': index === 0 ? 'start' : 'end' });
      label.textContent = day.day.slice(5);
      chart.append(label);
    }
  });
  return chart;
}

async function showUsage(id, name) {
  const usage = await api('/keys/' + encodeURIComponent(id) + '/usage?days=30');
  $('usage-title').textContent = 'Usage of "' + name + '", ' + usage.from + ' to ' + usage.to;
  $('usage-chart').replaceChildren(usageChart(usage));
  const legend = $('usage-legend');
  const totals = $('usage-totals').tBodies[0];
  legend.replaceChildren();
  totals.replaceChildren();
  for (const outcome of usage.outcomes) {
    const label = OUTCOME_LABELS[outcome] || outcome;
    const sum = usage.days.reduce((total, day) => total + (day[outcome] || 0), 0);
    const swatch = svg('svg', { class: 'swatch', viewBox: '0 0 10 10', 'aria-hidden': 'true' });
    swatch.append(svg('rect', { width: 10, height: 10, class: 'o-' + outcome }));
    legend.append(el('li', {}, swatch, label));
    totals.append(el('tr', { 'data-outcome': outcome }, el('th', { scope: 'row', text: label }), el('td', { text: String(sum) })));
  }
  $('usage-panel').hidden = false;
  $('usage-title').focus();
}

// ----- audit trail -----------------------------------------------------------------------------

async function loadAudit() {
  const query = '?limit=50' + (auditBefore !== null ? '&before=' + auditBefore : '');
  const page = await api('/keys/' + encodeURIComponent(auditKey) + '/audit' + query);
  const rows = $('audit-table').tBodies[0];
  for (const event of page.events) {
    const cell = (label, text) => el('td', { 'data-label': label, text });
    rows.append(el('tr', { 'data-action': event.action },
      cell('Time', when(event.at, '', true)),
      cell('Action', event.action.replace('_', ' ')),
      cell('By', event.actor),
      cell('Address', event.address || '—'),
      cell('Related key', event.related_key || '—')));
  }
  auditBefore = page.next_before;
  $('audit-more').hidden = auditBefore === null || auditBefore === undefined;
  $('audit-empty').hidden = rows.children.length > 0;
}

async function showAudit(id, name) {
  auditKey = id;
  auditBefore = null;
  $('audit-table').tBodies[0].replaceChildren();
  $('audit-title').textContent = 'Activity of "' + name + '"';
  await loadAudit();
  $('audit-panel').hidden = false;
  $('audit-title').focus();
}

// ----- start -----------------------------------------------------------------------------------

function closePanel(id) {
  $(id).hidden = true;
  $('keys-title').focus();
}

async function start() {
  $('keys-title').tabIndex = -1;
  $('create-form').addEventListener('submit', createKey);
  $('copy-key').addEventListener('click', copySecret);
  $('done-key').addEventListener('click', hideSecret);
  $('keys-body').addEventListener('click', onKeyAction);
  $('load-more').addEventListener('click', () => loadKeys(nextCursor).catch(fail));
  $('audit-more').addEventListener('click', () => loadAudit().catch(fail));
  $('usage-close').addEventListener('click', () => closePanel('usage-panel'));
  $('audit-close').addEventListener('click', () => closePanel('audit-panel'));
  try {
    await Promise.all([loadMe(), loadScopes(), reloadKeys()]);
    body.dataset.ready = 'true';
  } catch (error) {
    fail(error);
  }
}

start();
