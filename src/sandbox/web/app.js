'use strict';
/*
 * keygate sandbox: a Discord look-alike that talks to the sandbox server's
 * HTTP API (src/sandbox/web.rs). Plain ES2020, no dependencies.
 *
 * Stable hooks for browser tests:
 *   [data-channel="general"|"approvals"|"audit-log"|"dm"]  channel entries (left column)
 *   #as-picker                       opens the "acting as" menu; its entries: [data-member="Ada"]
 *   [data-message-id="…"]            each message (article)
 *   [data-custom-id="…"]             message buttons, and the toggle button of a select menu
 *   [data-option-value="…"]          options of an open select menu (inside the select's wrapper)
 *   [data-dismiss="<message id>"]    "Dismiss message" of an ephemeral message
 *   #composer                        the composer's text input
 *   [data-command="app create"]      slash-command suggestions in the popup (#popup)
 *   [data-option="name"]             a command option's input or <select> in the composer
 *   [data-add-option="name"]         button adding an optional option to the composer
 *   [data-choice-value="…"]          autocomplete suggestions in the popup
 *   #modal, its inputs [name="<custom_id>"], #modal-submit, #modal-cancel
 *   .toast                           error messages
 */

const LS = { as: 'keygate-sandbox.as', view: 'keygate-sandbox.view' };
const EPHEMERAL = 64, LOADING = 128;
const GROUP_MS = 7 * 60 * 1000; // Discord groups one author's messages within 7 minutes
const TOPICS = {
  general: 'Try keygate here: type /app create',
  approvals: 'Approval requests for new applications',
  'audit-log': 'What keygate did, for the record',
};

const S = {
  as: localStorage.getItem(LS.as),
  view: localStorage.getItem(LS.view) || 'general', // a channel name, or 'dm'
  state: null,
  fresh: true,          // next state is a new member's: its messages count as already seen
  known: new Map(),     // view -> Set of message ids already seen (for unread marks)
  unread: new Map(),    // view -> count of messages that arrived while elsewhere
  // In memory only, as in Discord: a dismissed ephemeral message is gone until a reload.
  dismissed: new Set(),
  nodes: new Map(),     // key -> rendered node of the open view (kept while unchanged)
  stick: true,          // scroll to the bottom at the next render
  openSel: null,        // the open select menu: {key, node, values:Set, initial, multi, send}
  chosen: new Map(),    // select key -> {values, sig}: shown until the bot edits the message
  cmd: null,            // slash command being composed: {entry, opts, shown, fields}
  popup: null,          // {title, items, active, empty, owner}
  modalId: null,
  closedModals: new Set(),
  sending: false,
};

/* ---------- small helpers ---------- */

const $ = (sel, root = document) => root.querySelector(sel);

// Builds DOM without innerHTML; `html` is only ever given our own escaped markup or icons.
function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') n.className = v;
    else if (k === 'html') n.innerHTML = v;
    else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids.flat(Infinity)) if (c != null && c !== false) n.append(c instanceof Node ? c : String(c));
  return n;
}

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = s => String(s).replace(/[&<>"']/g, c => ESC[c]);

const ICONS = {
  hash: '<path d="M10 3 8 21M16 3l-2 18M4 8.5h17M3 15.5h17" stroke="currentColor" stroke-width="2" stroke-linecap="round" fill="none"/>',
  eye: '<path d="M1.5 12S5.5 5 12 5s10.5 7 10.5 7-4 7-10.5 7S1.5 12 1.5 12Z" fill="none" stroke="currentColor" stroke-width="2"/><circle cx="12" cy="12" r="3" fill="currentColor"/>',
  chevron: '<path d="m6 9 6 6 6-6" fill="none" stroke="currentColor" stroke-width="2.5" stroke-linecap="round" stroke-linejoin="round"/>',
  x: '<path d="M6 6l12 12M18 6 6 18" stroke="currentColor" stroke-width="2.5" stroke-linecap="round"/>',
  copy: '<rect x="8" y="8" width="12" height="12" rx="2" fill="none" stroke="currentColor" stroke-width="2"/><path d="M16 8V6a2 2 0 0 0-2-2H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h2" fill="none" stroke="currentColor" stroke-width="2"/>',
  swap: '<path d="M7 4 3 8l4 4M3 8h14M17 12l4 4-4 4M21 16H7" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"/>',
  check: '<path d="m5 12.5 4.5 4.5L19 7.5" fill="none" stroke="currentColor" stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/>',
  pin: '<path d="M14.5 2.5 21.5 9.5l-2.2.7-3.8 3.8.6 4.9-1.8 1.8-4.1-4.1-5.4 5.4-1.3-1.3 5.4-5.4-4.1-4.1 1.8-1.8 4.9.6 3.8-3.8z" fill="currentColor"/>',
  link: '<path d="M14 4h6v6M20 4l-9 9M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>',
  at: '<circle cx="12" cy="12" r="4" fill="none" stroke="currentColor" stroke-width="2"/><path d="M16 8v5a3 3 0 0 0 6 0v-1a10 10 0 1 0-4 8" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/>',
};
const svg = (name, size = 16) => `<svg viewBox="0 0 24 24" width="${size}" height="${size}" aria-hidden="true">${ICONS[name]}</svg>`;
const icon = (name, size, cls = 'ico') => el('span', { class: cls, html: svg(name, size), 'aria-hidden': 'true' });

const AV_COLORS = ['#5865f2', '#3ba55c', '#faa61a', '#ed4245', '#eb459e', '#757e8a'];
function avatar(name, id, size = 40) {
  let h = 0;
  for (const ch of String(id || name)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  const color = id && id === S.state?.bot?.id ? '#5865f2' : AV_COLORS[h % AV_COLORS.length];
  const letter = [...String(name || '?')][0].toUpperCase();
  return el('div', { class: 'avatar', style: `--av:${color};--size:${size}px`, 'aria-hidden': 'true' }, letter);
}
const botTag = () => el('span', { class: 'bot-tag' }, 'BOT');

let toastTimer = 0;
function toast(text, kind = 'error') {
  const t = el('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 6000 : 3500);
  return toastTimer++;
}

async function api(path, body) {
  const init = body === undefined ? { cache: 'no-store' } : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch { /* an empty or non-JSON body */ }
  if (!res.ok) {
    const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

/* ---------- time ---------- */

const pad = n => String(n).padStart(2, '0');
const hm = d => `${pad(d.getHours())}:${pad(d.getMinutes())}`;
// Discord sends microseconds; trim them so every engine parses the timestamp.
const parseTs = ts => new Date(String(ts || '').replace(/(\.\d{3})\d+/, '$1'));
const midnight = d => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
function calendar(d) {
  const days = Math.round((midnight(new Date()) - midnight(d)) / 864e5);
  if (days === 0) return `Today at ${hm(d)}`;
  if (days === 1) return `Yesterday at ${hm(d)}`;
  return `${pad(d.getDate())}/${pad(d.getMonth() + 1)}/${d.getFullYear()} ${hm(d)}`;
}
const fullDate = d => d.toLocaleString('en-GB', { dateStyle: 'full', timeStyle: 'short' });
function relative(d) {
  const secs = (d.getTime() - Date.now()) / 1000;
  const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
  for (const [unit, s] of [['year', 31536e3], ['month', 2592e3], ['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (Math.abs(secs) >= s) return rtf.format(Math.round(secs / s), unit);
  }
  return rtf.format(Math.round(secs), 'second');
}
function discordTime(unix, style) {
  const d = new Date(Number(unix) * 1000);
  const f = opts => d.toLocaleString('en-GB', opts);
  switch (style) {
    case 't': return hm(d);
    case 'T': return `${hm(d)}:${pad(d.getSeconds())}`;
    case 'd': return `${pad(d.getDate())}/${pad(d.getMonth() + 1)}/${d.getFullYear()}`;
    case 'D': return f({ dateStyle: 'long' });
    case 'F': return `${f({ dateStyle: 'full' })} ${hm(d)}`;
    case 'R': return relative(d);
    default: return `${f({ dateStyle: 'long' })} ${hm(d)}`;
  }
}

/* ---------- lookups ---------- */

const st = () => S.state;
const meMember = () => st().members.find(m => m.id === S.as) || st().members[0];
const channelByName = name => st().channels.find(c => c.name === name);
function memberName(id) {
  if (id === st().bot.id) return st().bot.name;
  return st().members.find(m => m.id === id)?.name ?? 'unknown-user';
}
const roleName = id => st().roles.find(r => r.id === id)?.name ?? 'deleted-role';
function viewMessages(view) {
  if (view === 'dm') return st().dm?.messages || [];
  const c = channelByName(view);
  return (c && st().messages[c.id]) || [];
}
const viewChannelId = view => (view === 'dm' ? st().dm?.channel_id : channelByName(view)?.id) || null;

/* ---------- markdown (escape first; every tag below is ours) ---------- */

function markdown(src) {
  src = String(src ?? '').replace(/\u0000/g, '');
  const re = /```(?:([\w+#.-]+)?\n)?([\s\S]*?)```/g;
  let out = '', last = 0, m;
  while ((m = re.exec(src))) {
    out += blocks(src.slice(last, m.index).replace(/\n$/, ''));
    out += `<div class="codeblock"><pre><code>${esc(m[2].replace(/\n$/, ''))}</code></pre>` +
      '<button type="button" class="copy" aria-label="Copy code">Copy</button></div>';
    last = re.lastIndex;
    if (src[last] === '\n') last++; // Discord swallows the newline after a block
  }
  return out + blocks(src.slice(last));
}

function blocks(text) {
  if (!text) return '';
  const lines = text.split('\n'), parts = [];
  let quote = null;
  const endQuote = () => {
    if (quote) parts.push({ block: true, html: `<blockquote>${blocks(quote.join('\n'))}</blockquote>` });
    quote = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let mm;
    if (line.startsWith('>>> ')) { endQuote(); quote = [line.slice(4), ...lines.slice(i + 1)]; break; }
    if (line.startsWith('> ') || line === '>') { (quote ||= []).push(line.slice(2)); continue; }
    endQuote();
    if ((mm = /^(#{1,3}) (.+)/.exec(line))) parts.push({ block: true, html: `<div class="h${mm[1].length}">${inline(mm[2])}</div>` });
    else if ((mm = /^-# (.+)/.exec(line))) parts.push({ block: true, html: `<div class="subtext">${inline(mm[1])}</div>` });
    else if ((mm = /^\s*[-*] (.+)/.exec(line))) parts.push({ block: true, html: `<div class="li">${inline(mm[1])}</div>` });
    else if ((mm = /^(\d{1,3})\. (.+)/.exec(line))) parts.push({ block: true, html: `<div class="li num"><span class="n">${mm[1]}.</span>${inline(mm[2])}</div>` });
    else parts.push({ block: false, html: inline(line) });
  }
  endQuote();
  // Plain lines are separated by <br>; block lines already break.
  return parts.map((p, i) => (i > 0 && !p.block && !parts[i - 1].block ? '<br>' : '') + p.html).join('');
}

function inline(text) {
  const held = [];
  const hold = html => `\u0000${held.push(html) - 1}\u0000`;
  // NUL marks held pieces: one typed by a user must not pose as one (it would put HTML in href).
  let t = String(text).replace(/\u0000/g, '');
  t = t.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, _t, code) => hold(codeSpan(code)));
  t = t.replace(/\\([\\*_~`|>#[\]()<:-])/g, (_, c) => hold(esc(c)));
  // Autolinks first, whole, as Discord reads them: what is inside is a URL, not markup.
  t = t.replace(/<(https?:\/\/[^\s<>\u0000]+)>/g, (_, url) => hold(link(url, esc(url))));
  t = t.replace(/\[([^\]\n]+)\]\(<?(https?:\/\/[^\s)>\u0000]+)>?\)/g, (_, label, url) => hold(link(url, styles(esc(label)))));
  t = t.replace(/(https?:\/\/[^\s<>\u0000]*[^\s<>.,:;"'!?)\]\u0000])/g, (_, url) => hold(link(url, esc(url))));
  t = t.replace(/<@!?(\d+)>/g, (_, id) => hold(`<span class="mention">@${esc(memberName(id))}</span>`));
  t = t.replace(/<@&(\d+)>/g, (_, id) => hold(`<span class="mention">@${esc(roleName(id))}</span>`));
  t = t.replace(/<#(\d+)>/g, (_, id) => {
    const c = st().channels.find(ch => ch.id === id);
    return hold(c ? `<span class="mention" role="button" tabindex="0" data-jump="${esc(c.name)}">#${esc(c.name)}</span>` : '<span class="mention">#unknown</span>');
  });
  t = t.replace(/<t:(-?\d+)(?::([tTdDfFR]))?>/g, (_, s, f) =>
    hold(`<time class="ts" title="${esc(fullDate(new Date(s * 1000)))}">${esc(discordTime(s, f))}</time>`));
  let h = styles(esc(t));
  // Held pieces may hold others (a code span inside a link label).
  for (let i = 0; i < 3 && h.includes('\u0000'); i++) h = h.replace(/\u0000(\d+)\u0000/g, (_, n) => held[+n]);
  return h;
}

function styles(h) {
  return h
    .replace(/\|\|(.+?)\|\|/g, '<span class="spoiler" role="button" tabindex="0" aria-label="Spoiler, press to reveal">$1</span>')
    .replace(/\*\*\*(.+?)\*\*\*/g, '<strong><em>$1</em></strong>')
    .replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>')
    .replace(/__(.+?)__/g, '<u>$1</u>')
    .replace(/\*(?!\s)(.+?)(?<!\s)\*/g, '<em>$1</em>')
    .replace(/(^|[^\p{L}\p{N}_])_(?!\s)(.+?)(?<!\s)_(?![\p{L}\p{N}_])/gu, '$1<em>$2</em>')
    .replace(/~~(.+?)~~/g, '<s>$1</s>');
}

// Secrets and keys come as long code spans: one click selects them whole, and a button copies.
function codeSpan(code) {
  const copy = code.length >= 16 && !/\s/.test(code)
    ? `<button type="button" class="copy-inline" aria-label="Copy" title="Copy">${svg('copy', 12)}</button>` : '';
  return `<code class="inline">${esc(code)}</code>${copy}`;
}
const link = (url, label) => `<a href="${esc(url)}" target="_blank" rel="noopener noreferrer">${label}</a>`;

/* ---------- left column, header, members ---------- */

// Re-renders a container only when what it shows changed, so focus and hover survive.
function renderIf(node, sig, build) {
  if (node._sig === sig) return;
  node._sig = sig;
  node.replaceChildren(...[build()].flat(Infinity).filter(k => k != null && k !== false));
}

function renderSidebar() {
  const s = st();
  $('#guild-name').textContent = s.guild.name;
  $('#guild-icon').textContent = [...s.guild.name].slice(0, 2).join('');
  renderIf($('#channel-list'), JSON.stringify([s.channels, S.view, [...S.unread]]), () => s.channels.map(c => {
    const active = S.view === c.name, unread = !active && S.unread.get(c.name) > 0;
    return el('button', {
      type: 'button', class: `chan${active ? ' active' : ''}${unread ? ' unread' : ''}`, 'data-channel': c.name,
      'aria-current': active ? 'page' : null, 'aria-label': `#${c.name}${unread ? ' (unread)' : ''}`,
      onclick: () => openView(c.name),
    }, icon('hash', 20), el('span', { class: 'chan-name' }, c.name));
  }));
  const dmCount = S.view === 'dm' ? 0 : S.unread.get('dm') || 0;
  renderIf($('#dm-list'), JSON.stringify([s.bot, S.view, dmCount]), () => [el('button', {
    type: 'button', class: `chan dm${S.view === 'dm' ? ' active' : ''}${dmCount ? ' unread' : ''}`, 'data-channel': 'dm',
    'aria-current': S.view === 'dm' ? 'page' : null,
    'aria-label': `Direct messages with ${s.bot.name}${dmCount ? `, ${dmCount} new` : ''}`,
    onclick: () => openView('dm'),
  }, avatar(s.bot.name, s.bot.id, 32), el('span', { class: 'chan-name' }, s.bot.name), botTag(),
  dmCount ? el('span', { class: 'badge' }, dmCount > 99 ? '99+' : dmCount) : null)]);

  const me = meMember();
  renderIf($('#as-picker'), JSON.stringify(me), () => [
    avatar(me.name, me.id, 32),
    el('span', { class: 'up-text' }, el('span', { class: 'up-name' }, me.name), el('span', { class: 'up-sub' }, `${me.title} · switch member`)),
    icon('swap', 18),
  ]);
  $('#as-picker').setAttribute('aria-label', `Acting as ${me.name} (${me.title}). Switch member`);
  const unreadTotal = [...S.unread.entries()].filter(([k]) => k !== S.view).reduce((a, [, n]) => a + n, 0);
  document.title = `${unreadTotal ? `(${unreadTotal}) ` : ''}keygate sandbox`;
}

function renderHeader() {
  const s = st();
  renderIf($('#chat-header'), JSON.stringify([S.view, s.bot.name, S.live]), () => [
    S.view === 'dm'
      ? [icon('at', 22, 'ico head-ico'), el('h2', {}, s.bot.name), botTag()]
      : [icon('hash', 22, 'ico head-ico'), el('h2', {}, S.view), TOPICS[S.view] ? [el('span', { class: 'head-sep' }), el('span', { class: 'topic' }, TOPICS[S.view])] : null],
    el('span', { class: `live ${S.live ? 'on' : 'off'}`, title: S.live ? 'Live updates on' : 'Reconnecting…' }, S.live ? 'live' : 'reconnecting…'),
  ]);
  $('#composer').placeholder = S.cmd ? '' : S.view === 'dm' ? `Message @${s.bot.name}` : `Message #${S.view} — type / for commands`;
}

function renderMembers() {
  const s = st();
  renderIf($('#member-list'), JSON.stringify([s.members, S.as, s.bot]), () => {
    const groups = new Map();
    for (const m of s.members) (groups.get(m.title) || groups.set(m.title, []).get(m.title)).push(m);
    const row = (name, id, extra) => el('div', { class: `member${id === S.as ? ' me' : ''}` },
      avatar(name, id, 32), el('span', { class: 'member-name' }, name), extra);
    return [
      ...[...groups].map(([title, list]) => [
        el('h3', { class: 'member-group' }, `${title} — ${list.length}`),
        list.map(m => row(m.name, m.id, m.id === S.as ? el('span', { class: 'you' }, 'you') : null)),
      ]),
      el('h3', { class: 'member-group' }, 'Bots — 1'),
      row(s.bot.name, s.bot.id, botTag()),
    ].flat();
  });
}

/* ---------- messages ---------- */

function renderMessages() {
  const box = $('#messages'), list = $('#message-list');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const msgs = viewMessages(S.view).filter(m => !S.dismissed.has(m.id));
  const epoch = JSON.stringify([S.as, st().members, st().roles, st().channels, st().bot]);
  const nodes = [], keep = new Map();
  const use = (key, sig, build) => {
    let n = S.nodes.get(key);
    if (!n || n._sig !== sig) { n = build(); n._sig = sig; }
    keep.set(key, n);
    nodes.push(n);
  };
  use(`start:${S.view}`, epoch, channelStart);
  if (!msgs.length) use(`hint:${S.view}`, epoch, firstRunHint);
  let prev = null, prevDay = null;
  for (const m of msgs) {
    const d = parseTs(m.timestamp), day = midnight(d);
    if (day !== prevDay) {
      use(`day:${day}`, '', () => el('div', { class: 'day', role: 'separator' }, el('span', {}, d.toLocaleDateString('en-GB', { dateStyle: 'long' }))));
      prevDay = day;
      prev = null;
    }
    const grouped = !!prev && !m.interaction && !((prev.flags | m.flags) & EPHEMERAL) && prev.author?.id === m.author?.id &&
      d - parseTs(prev.timestamp) < GROUP_MS;
    const raw = JSON.stringify(m);
    for (const [k, c] of S.chosen) if (k.startsWith(`${m.id}\u0001`) && c.sig !== raw) S.chosen.delete(k);
    const chosen = [...S.chosen].filter(([k]) => k.startsWith(`${m.id}\u0001`)).map(([k, c]) => [k, c.values]);
    use(`m:${m.id}`, raw + grouped + JSON.stringify(chosen) + epoch, () => renderMessage(m, grouped));
    prev = m;
  }
  // Keep focus on a control whose message was re-rendered (e.g. an open select's option).
  const a = document.activeElement;
  const ref = a && list.contains(a) && a.closest('[data-message-id]')
    ? [a.closest('[data-message-id]').dataset.messageId, a.dataset.customId, a.dataset.optionValue] : null;
  let cursor = list.firstChild;
  for (const n of nodes) {
    if (n === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(n, cursor);
  }
  while (cursor) { const next = cursor.nextSibling; cursor.remove(); cursor = next; }
  S.nodes = keep;
  if (S.openSel && !S.openSel.node.isConnected) S.openSel = null;
  if (ref && !a.isConnected) {
    const msg = list.querySelector(`[data-message-id="${CSS.escape(ref[0])}"]`);
    const sel = ref[2] != null ? `[data-option-value="${CSS.escape(ref[2])}"]` : ref[1] != null ? `[data-custom-id="${CSS.escape(ref[1])}"]` : null;
    (msg && sel && msg.querySelector(sel))?.focus({ preventScroll: true });
  }
  if (S.stick || atBottom) box.scrollTop = box.scrollHeight;
  S.stick = false;
}

function channelStart() {
  const s = st();
  if (S.view === 'dm') {
    return el('div', { class: 'start' }, avatar(s.bot.name, s.bot.id, 80), el('h2', {}, s.bot.name),
      el('p', {}, 'This is the beginning of your direct message history with ', el('strong', {}, s.bot.name), '.'));
  }
  return el('div', { class: 'start' }, el('div', { class: 'start-icon', html: svg('hash', 44) }),
    el('h2', {}, `Welcome to #${S.view}!`), el('p', {}, `This is the start of the #${S.view} channel.`));
}

// Shown only while a view is empty; drawn by the page, not a message.
function firstRunHint() {
  const tryIt = () => { const c = $('#composer'); clearComposer(); c.value = '/app create'; c.focus(); showCommandPopup('app create'); };
  const texts = {
    approvals: 'Nothing to approve yet. When an application needs approval, keygate posts the request here for an Approver.',
    'audit-log': 'No entries yet. keygate records what happens to applications here.',
    dm: 'No messages yet. keygate sends your application\'s credentials here, in a DM only you can read.',
  };
  if (S.view !== 'general') return el('div', { class: 'hint' }, texts[S.view] || 'No messages here yet.');
  return el('div', { class: 'hint pinned' },
    el('div', { class: 'hint-head' }, icon('pin', 14), 'Pinned'),
    el('p', { class: 'hint-title' }, 'Welcome to the keygate sandbox: type ', el('code', { class: 'inline' }, '/app create'), ' to register an application'),
    el('p', {}, 'You act as a member of this server: switch who you are in the bottom-left corner to see what an Approver or a plain Member sees. ',
      'Requests land in #approvals, the record in #audit-log, and credentials in your DM with keygate.'),
    el('button', { type: 'button', class: 'btn primary small', onclick: tryIt }, 'Try /app create'));
}

function renderMessage(m, grouped) {
  const eph = m.flags & EPHEMERAL, thinking = m.flags & LOADING;
  const author = m.author || {};
  const name = author.global_name || author.username || 'unknown';
  const d = parseTs(m.timestamp);
  const text = String(m.content || '');
  const mentioned = text.includes(`<@${S.as}>`) || (meMember().roles || []).some(r => text.includes(`<@&${r}>`));
  const node = el('article', {
    class: `msg${grouped ? ' grouped' : ''}${eph ? ' ephemeral' : ''}${m.interaction ? ' has-reply' : ''}${mentioned ? ' mentioned' : ''}`,
    'data-message-id': m.id, 'aria-label': `${name}, ${calendar(d)}`,
  });
  if (m.interaction) {
    node.append(el('div', { class: 'reply' }, el('span', { class: 'spine' }), avatar(m.interaction.user_name, null, 16),
      el('span', { class: 'reply-name' }, m.interaction.user_name), ' used ', el('span', { class: 'reply-cmd' }, `/${m.interaction.command}`)));
  }
  node.append(grouped
    ? el('time', { class: 'gutter-time', datetime: d.toISOString(), title: fullDate(d) }, hm(d))
    : avatar(name, author.id));
  const body = el('div', { class: 'msg-body' });
  if (!grouped) {
    body.append(el('h3', { class: 'msg-head' }, el('span', { class: 'author' }, name), author.bot ? botTag() : null,
      el('time', { datetime: d.toISOString(), title: fullDate(d) }, calendar(d))));
  }
  if (thinking) {
    body.append(el('div', { class: 'thinking' }, `${name} is thinking`, el('span', { class: 'dots', 'aria-hidden': 'true' }, el('i', {}, '.'), el('i', {}, '.'), el('i', {}, '.'))));
  } else {
    const edited = m.edited_timestamp ? el('span', { class: 'edited', title: fullDate(parseTs(m.edited_timestamp)) }, '(edited)') : null;
    if (m.content) body.append(el('div', { class: 'content md', html: markdown(m.content) }, edited));
    for (const e of m.embeds || []) body.append(renderEmbed(e));
    if (!m.content && edited) body.append(el('div', { class: 'content' }, edited));
    const rows = (m.components || []).map(row => renderRow(m, row)).filter(Boolean);
    if (rows.length) body.append(el('div', { class: 'components' }, rows));
  }
  if (eph) {
    body.append(el('div', { class: 'eph-note' }, icon('eye', 16), 'Only you can see this • ',
      el('button', { type: 'button', class: 'linkish', 'data-dismiss': m.id, onclick: () => dismiss(m.id) }, 'Dismiss message')));
  }
  node.append(body);
  return node;
}

function dismiss(id) {
  S.dismissed.add(id);
  renderMessages();
}

function renderEmbed(e) {
  const color = e.color != null ? `#${Number(e.color).toString(16).padStart(6, '0')}` : '#1e1f22';
  const node = el('div', { class: 'embed', style: `--accent:${color}` });
  if (e.author?.name) node.append(el('div', { class: 'embed-author' }, e.author.name));
  if (e.title) {
    const title = el('div', { class: 'embed-title md', html: inline(String(e.title)) });
    node.append(e.url && /^https?:/.test(e.url) ? el('a', { href: e.url, target: '_blank', rel: 'noopener noreferrer', class: 'embed-title-link' }, title) : title);
  }
  if (e.description) node.append(el('div', { class: 'embed-desc md', html: markdown(e.description) }));
  const fields = e.fields || [];
  if (fields.length) {
    // Discord's grid: up to three inline fields share a row; others take the whole row.
    const grid = el('div', { class: 'embed-fields' });
    for (let i = 0; i < fields.length;) {
      let run = 1;
      if (fields[i].inline) while (run < 3 && i + run < fields.length && fields[i + run].inline) run++;
      for (let j = 0; j < run; j++) {
        const f = fields[i + j];
        grid.append(el('div', { class: 'embed-field', style: `grid-column:span ${12 / run}` },
          el('div', { class: 'field-name md', html: inline(String(f.name ?? '')) }),
          el('div', { class: 'field-value md', html: markdown(f.value ?? '') })));
      }
      i += run;
    }
    node.append(grid);
  }
  const foot = [e.footer?.text, e.timestamp ? calendar(parseTs(e.timestamp)) : null].filter(Boolean).join(' • ');
  if (foot) node.append(el('div', { class: 'embed-footer' }, foot));
  return node;
}

/* ---------- components ---------- */

function renderRow(m, row) {
  if (row.type !== 1) return null;
  return el('div', { class: 'row' }, (row.components || []).map(c =>
    c.type === 2 ? renderButton(m, c) : [3, 5, 6, 8].includes(c.type) ? renderSelect(m, c) : null));
}

const BTN = { 1: 'primary', 2: 'secondary', 3: 'success', 4: 'danger', 5: 'secondary' };
function renderButton(m, c) {
  const emoji = c.emoji?.name && !c.emoji.id ? el('span', { class: 'emoji' }, c.emoji.name) : null;
  const label = c.label ? el('span', { class: 'label' }, c.label) : null;
  if (c.style === 5) {
    return c.disabled || !/^https?:/.test(c.url || '')
      ? el('button', { type: 'button', class: 'btn secondary', disabled: true }, emoji, label, icon('link', 14))
      : el('a', { class: 'btn secondary', href: c.url, target: '_blank', rel: 'noopener noreferrer' }, emoji, label, icon('link', 14));
  }
  const b = el('button', { type: 'button', class: `btn ${BTN[c.style] || 'secondary'}`, 'data-custom-id': c.custom_id, disabled: !!c.disabled }, emoji, label);
  b.addEventListener('click', async () => {
    // Discord shows dots on the button until the interaction is answered.
    b.disabled = true;
    b.classList.add('loading');
    try { await sendComponent(m, c.custom_id, null); } catch (err) { toast(err.message); } finally {
      b.classList.remove('loading');
      b.disabled = !!c.disabled;
    }
  });
  return b;
}

const sendComponent = (m, custom_id, values) => api('/api/component', {
  as: S.as, channel_id: m.channel_id || viewChannelId(S.view), message_id: m.id, custom_id, values,
});

function selectOptions(c) {
  const s = st();
  if (c.type === 5) return s.members.map(m => ({ label: m.name, value: m.id, description: m.title }));
  if (c.type === 6) return s.roles.map(r => ({ label: `@${r.name}`, value: r.id }));
  if (c.type === 8) return s.channels.map(ch => ({ label: `#${ch.name}`, value: ch.id }));
  return c.options || [];
}

function renderSelect(m, c) {
  const key = `${m.id}\u0001${c.custom_id}`;
  const options = selectOptions(c);
  const multi = (c.max_values ?? 1) > 1;
  const min = c.min_values ?? 1, max = Math.min(c.max_values ?? 1, options.length || 1);
  const current = S.chosen.get(key)?.values ?? options.filter(o => o.default).map(o => o.value);
  const wrap = el('div', { class: 'select' });
  const headText = el('span', { class: 'select-text' });
  const head = el('button', {
    type: 'button', class: 'select-head', 'data-custom-id': c.custom_id, 'aria-haspopup': 'listbox', 'aria-expanded': 'false',
    'aria-label': c.placeholder || 'Select', disabled: !!c.disabled,
  }, headText, icon('chevron', 20, 'ico chev'));
  wrap.append(head);
  const paintHead = values => {
    const labels = options.filter(o => values.includes(o.value)).map(o => o.label);
    headText.textContent = labels.length ? labels.join(', ') : c.placeholder || 'Make a selection';
    headText.classList.toggle('placeholder', !labels.length);
  };
  paintHead(current);

  const paintList = o => {
    wrap.querySelector('.select-list')?.remove();
    const full = o.multi && o.values.size >= max;
    const list = el('div', { class: 'select-list', role: 'listbox', 'aria-multiselectable': o.multi ? 'true' : null },
      options.map(opt => {
        const on = o.values.has(opt.value), off = full && !on;
        return el('button', {
          type: 'button', role: 'option', class: `select-opt${on ? ' on' : ''}`, 'aria-selected': String(on),
          'aria-disabled': off ? 'true' : null, 'data-option-value': opt.value,
          onclick: () => pick(opt.value, off),
        }, opt.emoji?.name && !opt.emoji.id ? el('span', { class: 'emoji' }, opt.emoji.name) : null,
        el('span', { class: 'opt-text' }, el('span', { class: 'opt-label' }, opt.label), opt.description ? el('span', { class: 'opt-desc' }, opt.description) : null),
        o.multi ? el('span', { class: `checkbox${on ? ' on' : ''}`, html: on ? svg('check', 14) : '' }) : null);
      }));
    wrap.append(list);
    // Open upward when the list would run past the bottom of the messages pane.
    const room = $('#messages').getBoundingClientRect().bottom - head.getBoundingClientRect().bottom;
    wrap.classList.toggle('up', room < Math.min(list.scrollHeight, 320) + 8);
  };

  const open = values => {
    if (S.openSel) closeSelect(true);
    const o = { key, node: wrap, values: new Set(values), initial: [...values], multi, paint: () => paintList(o) };
    o.send = async () => {
      const vals = [...o.values];
      if (vals.length < min) { paintHead(current); return toast(`Pick at least ${min}.`, 'info'); }
      if (JSON.stringify([...vals].sort()) === JSON.stringify([...o.initial].sort())) return;
      S.chosen.set(key, { values: vals, sig: JSON.stringify(m) });
      paintHead(vals);
      try { await sendComponent(m, c.custom_id, vals); } catch (err) { S.chosen.delete(key); paintHead(current); toast(err.message); }
    };
    o.close = () => { wrap.classList.remove('open'); head.setAttribute('aria-expanded', 'false'); wrap.querySelector('.select-list')?.remove(); };
    S.openSel = o;
    wrap.classList.add('open');
    head.setAttribute('aria-expanded', 'true');
    paintList(o);
    return o;
  };

  const pick = (value, off) => {
    const o = S.openSel;
    if (!o || o.node !== wrap || off) return;
    if (!o.multi) {
      o.values = new Set([value]);
      closeSelect(false);
      head.focus();
      o.send();
      return;
    }
    if (o.values.has(value)) o.values.delete(value); else o.values.add(value);
    paintHead([...o.values]);
    o.paint();
    wrap.querySelector(`[data-option-value="${CSS.escape(value)}"]`)?.focus();
  };

  head.addEventListener('click', () => {
    if (S.openSel?.node === wrap) closeSelect(true);
    else open(current).node.querySelector('.select-opt')?.focus();
  });
  wrap.addEventListener('keydown', e => {
    const opts = [...wrap.querySelectorAll('.select-opt')];
    const i = opts.indexOf(document.activeElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      if (S.openSel?.node !== wrap) { if (!c.disabled) open(current); return wrap.querySelector('.select-opt')?.focus(); }
      const next = e.key === 'ArrowDown' ? Math.min(i + 1, opts.length - 1) : Math.max(i - 1, 0);
      opts[next]?.focus();
    } else if (e.key === 'Escape' && S.openSel?.node === wrap) {
      e.preventDefault();
      closeSelect(true);
      head.focus();
    } else if (e.key === 'Tab' && S.openSel?.node === wrap) {
      closeSelect(true);
    }
  });

  // Survive re-renders: a select that was open stays open with its pending choice.
  if (S.openSel?.key === key) {
    const pending = [...S.openSel.values];
    S.openSel = null;
    const o = open(pending);
    o.initial = current;
    if (multi) paintHead(pending);
  }
  return wrap;
}

// A multi-select sends its choice when it closes, as Discord does.
function closeSelect(commit) {
  const o = S.openSel;
  if (!o) return;
  S.openSel = null;
  o.close();
  if (commit && o.multi) o.send();
}

/* ---------- slash commands ---------- */

function flatCommands() {
  const out = [], dm = S.view === 'dm';
  // Before the first state arrives there are no commands yet (not an error).
  for (const c of st()?.commands || []) {
    if (c.type != null && c.type !== 1) continue; // user and message commands have no slash form
    const guildOnly = c.dm_permission === false || (Array.isArray(c.contexts) && !c.contexts.includes(1) && !c.contexts.includes(2));
    if (dm && guildOnly) continue;
    const subs = (c.options || []).filter(o => o.type === 1 || o.type === 2);
    const add = (path, sub, o) => out.push({ path, name: c.name, sub, description: o.description || '', options: o.options || [] });
    if (!subs.length) add(c.name, null, c);
    for (const o of subs) {
      if (o.type === 1) add(`${c.name} ${o.name}`, o.name, o);
      else for (const s of o.options || []) add(`${c.name} ${o.name} ${s.name}`, `${o.name} ${s.name}`, s);
    }
  }
  return out;
}

function showCommandPopup(query) {
  const q = query.trim().toLowerCase().replace(/\s+/g, ' ');
  const all = flatCommands();
  const hits = [...all.filter(c => c.path.startsWith(q)), ...all.filter(c => !c.path.startsWith(q) && c.path.includes(q))];
  showPopup({
    title: q ? `Commands matching /${q}` : `${st().bot.name} commands`,
    owner: $('#composer'),
    active: hits.length ? 0 : -1,
    empty: all.length ? 'No command matches.' : S.view === 'dm' ? 'keygate\'s commands work in the server\'s channels.' : 'No commands here.',
    items: hits.map(c => ({
      attrs: { 'data-command': c.path },
      main: `/${c.path}`,
      extra: c.options.filter(o => o.required).map(o => ` ${o.name}`).join(''),
      desc: c.description,
      side: st().bot.name,
      pick: () => startCommand(c),
    })),
  });
}

function startCommand(entry) {
  // Required options first, as Discord lists them.
  const opts = [...entry.options].sort((a, b) => (b.required ? 1 : 0) - (a.required ? 1 : 0));
  S.cmd = { entry, opts, shown: opts.filter(o => o.required).map(o => o.name), fields: new Map() };
  $('#composer').value = '';
  closePopup();
  paintComposer();
  const first = S.cmd.fields.get(S.cmd.shown[0]);
  if (first) first.focus(); else { $('#composer').focus(); showOptionList(); }
}

function clearComposer() {
  S.cmd = null;
  $('#composer').value = '';
  closePopup();
  paintComposer();
}

function addOption(name) {
  if (!S.cmd || S.cmd.shown.includes(name)) return;
  S.cmd.shown.push(name);
  $('#composer').value = '';
  closePopup();
  paintComposer();
  S.cmd.fields.get(name).focus();
}

function removeOption(name) {
  S.cmd.shown = S.cmd.shown.filter(n => n !== name);
  paintComposer();
  $('#composer').focus();
}

// Backspace in an empty composer undoes the last chip, then the command itself.
function backspaceCommand() {
  const c = S.cmd, optional = c.shown.filter(n => !c.opts.find(o => o.name === n).required);
  if (optional.length) return removeOption(optional[optional.length - 1]);
  const path = c.entry.path;
  clearComposer();
  $('#composer').value = `/${path}`;
  showCommandPopup(path);
}

function paintComposer() {
  const box = $('#composer-cmd'), c = S.cmd;
  $('#composer-box').classList.toggle('has-cmd', !!c);
  if (!c) { box.replaceChildren(); if (st()) renderHeader(); return; }
  const kids = [el('span', { class: 'cmd-pill' }, `/${c.entry.path}`,
    el('button', { type: 'button', class: 'pill-x', 'aria-label': 'Clear command', onclick: () => { clearComposer(); $('#composer').focus(); } }, icon('x', 12)))];
  for (const name of c.shown) {
    const opt = c.opts.find(o => o.name === name);
    if (!c.fields.has(name)) c.fields.set(name, optionField(opt));
    const f = c.fields.get(name);
    kids.push(el('span', { class: `opt-chip${opt.required ? ' required' : ''}`, 'data-option-field': name },
      el('label', { class: 'opt-name', for: f.id }, name), f,
      opt.required ? null : el('button', { type: 'button', class: 'opt-x', 'aria-label': `Remove option ${name}`, onclick: () => removeOption(name) }, icon('x', 10))));
  }
  for (const opt of c.opts) {
    if (!c.shown.includes(opt.name)) {
      kids.push(el('button', { type: 'button', class: 'opt-add', 'data-add-option': opt.name, title: opt.description, onclick: () => addOption(opt.name) }, `+ ${opt.name}`));
    }
  }
  box.replaceChildren(...kids);
  $('#composer').placeholder = '';
}

function optionField(opt) {
  const s = st();
  const base = {
    id: `opt-${opt.name}`, class: 'opt-input', 'data-option': opt.name,
    'aria-label': `${opt.name}${opt.description ? `: ${opt.description}` : ''}${opt.required ? ' (required)' : ''}`,
    'aria-required': opt.required ? 'true' : null,
  };
  const choose = pairs => el('select', base, el('option', { value: '' }, 'Choose…'), pairs.map(([v, l]) => el('option', { value: v }, l)));
  if (opt.choices?.length) return choose(opt.choices.map(ch => [String(ch.value), ch.name]));
  switch (opt.type) {
    case 5: return choose([['true', 'True'], ['false', 'False']]);
    case 6: return choose(s.members.map(m => [m.id, m.name]));
    case 7: return choose(s.channels.map(ch => [ch.id, `#${ch.name}`]));
    case 8: return choose(s.roles.map(r => [r.id, `@${r.name}`]));
    case 9: return choose([...s.members.map(m => [m.id, m.name]), ...s.roles.map(r => [r.id, `@${r.name}`])]);
    case 4: case 10:
      return el('input', { ...base, type: 'number', step: opt.type === 4 ? '1' : 'any', min: opt.min_value, max: opt.max_value, inputmode: opt.type === 4 ? 'numeric' : 'decimal' });
    case 3:
      return el('input', {
        ...base, type: 'text', spellcheck: 'false', maxlength: opt.max_length,
        role: opt.autocomplete ? 'combobox' : null, 'aria-autocomplete': opt.autocomplete ? 'list' : null,
        'aria-controls': opt.autocomplete ? 'popup' : null, 'aria-expanded': opt.autocomplete ? 'false' : null,
      });
    default: return el('input', { ...base, type: 'text', disabled: true, placeholder: 'not supported in the sandbox' });
  }
}

const optByName = name => S.cmd?.opts.find(o => o.name === name);

function optHint(opt) {
  const bits = [opt.required ? 'required' : 'optional'];
  if (opt.min_length != null || opt.max_length != null) bits.push(`${opt.min_length ?? 0}–${opt.max_length ?? '∞'} characters`);
  if (opt.min_value != null) bits.push(`min ${opt.min_value}`);
  if (opt.max_value != null) bits.push(`max ${opt.max_value}`);
  return `${opt.name}${opt.description ? ` — ${opt.description}` : ''} (${bits.join(', ')})`;
}

// The optional options not yet added, filtered by what is typed after the chips.
function showOptionList() {
  const c = S.cmd;
  if (!c) return;
  const typed = $('#composer').value.trim().toLowerCase();
  const rest = c.opts.filter(o => !c.shown.includes(o.name) && o.name.toLowerCase().startsWith(typed));
  showPopup({
    title: rest.length ? 'Optional options' : `Press Enter to run /${c.entry.path}`,
    owner: $('#composer'),
    active: typed && rest.length ? 0 : -1, // Enter sends unless the user is picking
    items: rest.map(o => ({ attrs: { 'data-add-option': o.name }, main: o.name, desc: o.description, pick: () => addOption(o.name) })),
  });
}

let acTimer = 0, acSeq = 0;
async function runAutocomplete(opt, input) {
  const seq = ++acSeq, c = S.cmd;
  if (!c) return;
  let choices;
  try {
    const r = await api('/api/autocomplete', {
      as: S.as, channel_id: viewChannelId(S.view), name: c.entry.name, subcommand: c.entry.sub, option: opt.name, typed: input.value,
    });
    choices = r?.choices || [];
  } catch (err) {
    if (seq === acSeq && document.activeElement === input) showPopup({ title: optHint(opt), owner: input, items: [], empty: `No suggestions: ${err.message}` });
    return;
  }
  // Drop answers overtaken by later typing or a move to another field.
  if (seq !== acSeq || document.activeElement !== input || S.cmd !== c) return;
  const picked = input.dataset.value;
  const at = picked !== undefined ? choices.findIndex(ch => String(ch.value) === picked) : choices.length ? 0 : -1;
  showPopup({
    title: optHint(opt), owner: input, active: at, empty: 'No matches.',
    items: choices.map(ch => ({
      attrs: { 'data-choice-value': String(ch.value) },
      main: ch.name,
      pick: () => {
        input.value = ch.name; // shows the name, sends the value
        input.dataset.value = String(ch.value);
        closePopup();
        input.closest('.opt-chip')?.classList.remove('invalid');
      },
    })),
  });
}

function showPopup(p) { S.popup = p; paintPopup(); }
function closePopup() { S.popup = null; paintPopup(); }

function paintPopup() {
  const box = $('#popup'), p = S.popup;
  document.querySelectorAll('#composer-box [aria-activedescendant]').forEach(n => n.removeAttribute('aria-activedescendant'));
  document.querySelectorAll('#composer-box [role="combobox"]').forEach(n => n.setAttribute('aria-expanded', 'false'));
  if (!p) { box.hidden = true; box.replaceChildren(); return; }
  box.hidden = false;
  box.setAttribute('role', p.items.length ? 'listbox' : 'status');
  const items = p.items.map((it, i) => el('button', {
    type: 'button', role: 'option', id: `pop-${i}`, class: `popup-item${i === p.active ? ' active' : ''}`, 'aria-selected': String(i === p.active), ...it.attrs,
    onmousedown: e => e.preventDefault(), // keep focus in the composer
    onmouseenter: () => { p.active = i; box.querySelectorAll('.popup-item').forEach((n, j) => { n.classList.toggle('active', j === i); n.setAttribute('aria-selected', String(j === i)); }); },
    onclick: () => it.pick(),
  }, el('span', { class: 'pi-main' }, it.main, it.extra ? el('span', { class: 'pi-extra' }, it.extra) : null),
  it.desc ? el('span', { class: 'pi-desc' }, it.desc) : null, it.side ? el('span', { class: 'pi-side' }, it.side) : null));
  box.replaceChildren(
    p.title ? el('div', { class: `popup-title${p.items.length ? '' : ' hint-only'}` }, p.title) : '',
    ...items,
    !items.length && p.empty ? el('div', { class: 'popup-empty' }, p.empty) : '');
  if (p.owner) {
    if (p.active >= 0) p.owner.setAttribute('aria-activedescendant', `pop-${p.active}`);
    if (p.owner.getAttribute('role') === 'combobox') p.owner.setAttribute('aria-expanded', 'true');
  }
  box.querySelector('.popup-item.active')?.scrollIntoView({ block: 'nearest' });
}

// [value, problem]: the option's JSON value (undefined when left empty) or why it is refused.
function readOption(opt, f) {
  const raw = f.dataset.value ?? f.value;
  if (String(raw).trim() === '') return [undefined, opt.required ? `${opt.name} is required.` : null];
  if (opt.type === 4 || opt.type === 10) {
    const n = Number(raw);
    if (!Number.isFinite(n) || (opt.type === 4 && !Number.isInteger(n))) return [, `${opt.name} must be ${opt.type === 4 ? 'a whole number' : 'a number'}.`];
    if (opt.min_value != null && n < opt.min_value) return [, `${opt.name} must be at least ${opt.min_value}.`];
    if (opt.max_value != null && n > opt.max_value) return [, `${opt.name} must be at most ${opt.max_value}.`];
    return [n];
  }
  if (opt.type === 5) return [raw === 'true'];
  if (opt.type === 3 && f.dataset.value === undefined) {
    if (opt.min_length != null && raw.length < opt.min_length) return [, `${opt.name} needs at least ${opt.min_length} characters.`];
    if (opt.max_length != null && raw.length > opt.max_length) return [, `${opt.name} takes at most ${opt.max_length} characters.`];
  }
  return [raw];
}

async function send() {
  if (!st()) return;
  const input = $('#composer');
  if (!S.cmd) {
    const text = input.value.trim();
    if (!text) return;
    if (!text.startsWith('/')) return toast('The sandbox only runs slash commands: type / to pick one.', 'info');
    const exact = flatCommands().find(c => `/${c.path}` === text.toLowerCase().replace(/\s+/g, ' '));
    if (!exact) return toast(`No command ${text} here: type / to see the commands.`, 'info');
    startCommand(exact);
    if (exact.options.some(o => o.required)) return;
  }
  const { entry } = S.cmd, options = [];
  for (const opt of S.cmd.opts) {
    if (!S.cmd.shown.includes(opt.name)) continue;
    const f = S.cmd.fields.get(opt.name);
    const [value, problem] = readOption(opt, f);
    if (problem) {
      f.closest('.opt-chip')?.classList.add('invalid');
      f.focus();
      return toast(problem);
    }
    if (value !== undefined) options.push({ name: opt.name, value });
  }
  const channel_id = viewChannelId(S.view);
  if (!channel_id) return toast('This conversation is not open yet.');
  if (S.sending) return;
  S.sending = true;
  try {
    await api('/api/command', { as: S.as, channel_id, name: entry.name, subcommand: entry.sub, options });
    clearComposer();
    S.stick = true;
    input.focus();
  } catch (err) {
    toast(err.message);
  } finally {
    S.sending = false;
  }
}

function wireComposer() {
  const box = $('#composer-box'), input = $('#composer');
  $('#composer-form').addEventListener('submit', e => { e.preventDefault(); send(); });
  box.addEventListener('click', e => { if (e.target === box) input.focus(); });
  input.addEventListener('input', () => {
    if (S.cmd) return showOptionList();
    if (input.value.startsWith('/')) showCommandPopup(input.value.slice(1)); else closePopup();
  });
  box.addEventListener('input', e => {
    const f = e.target, opt = f.dataset.option && optByName(f.dataset.option);
    if (!opt) return;
    f.closest('.opt-chip')?.classList.remove('invalid');
    if (opt.autocomplete) {
      delete f.dataset.value; // typed by hand again: send the text
      clearTimeout(acTimer);
      acTimer = setTimeout(() => runAutocomplete(opt, f), 200);
    }
  });
  box.addEventListener('change', e => e.target.closest('.opt-chip')?.classList.remove('invalid'));
  box.addEventListener('focusin', e => {
    const f = e.target;
    if (f === input) {
      if (S.cmd) showOptionList(); else if (input.value.startsWith('/')) showCommandPopup(input.value.slice(1));
      return;
    }
    const opt = f.dataset.option && optByName(f.dataset.option);
    if (!opt) return;
    if (opt.autocomplete) runAutocomplete(opt, f); else showPopup({ title: optHint(opt), owner: f, items: [] });
  });
  box.addEventListener('keydown', e => {
    const p = S.popup;
    if (p && p.items.length && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
      e.preventDefault();
      const n = p.items.length;
      p.active = e.key === 'ArrowDown' ? (p.active + 1) % n : p.active <= 0 ? n - 1 : p.active - 1;
      return paintPopup();
    }
    if (p && (e.key === 'Enter' || e.key === 'Tab') && p.items[p.active]) {
      e.preventDefault();
      return p.items[p.active].pick();
    }
    if (e.key === 'Escape' && p) { e.preventDefault(); return closePopup(); }
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); return send(); }
    if (e.key === 'Backspace' && e.target === input && S.cmd && !input.value) { e.preventDefault(); backspaceCommand(); }
  });
}

/* ---------- modal ---------- */

function syncModal() {
  const md = st().modal;
  const id = md && !S.closedModals.has(md.interaction_id) ? md.interaction_id : null;
  if (id === S.modalId) return; // same modal: keep what is typed
  S.modalId = id;
  $('#modal-root').replaceChildren();
  if (!id) return;
  closeSelect(false);
  closePopup();
  $('#modal-root').append(buildModal(md));
  $('#modal input, #modal textarea')?.focus();
}

function closeModal() {
  if (S.modalId) S.closedModals.add(S.modalId);
  S.modalId = null;
  $('#modal-root').replaceChildren();
  $('#composer').focus();
}

function dismissModal(md) {
  closeModal();
  api('/api/modal', { as: S.as, interaction_id: md.interaction_id, dismiss: true }).catch(err => toast(err.message));
}

// Discord's rules: required unless required is false; min_length and max_length in characters.
function modalFieldError(c, v) {
  if (!v.trim()) return c.required !== false ? 'This field is required' : null;
  if (c.min_length && v.length < c.min_length) return `Must be at least ${c.min_length} characters long`;
  if (c.max_length && v.length > c.max_length) return `Must be ${c.max_length} characters or fewer`;
  return null;
}

function buildModal(md) {
  const inputs = (md.components || []).flatMap(row => row.components || []).filter(c => c.type === 4);
  const fields = inputs.map((c, i) => {
    const id = `mf-${i}`, paragraph = c.style === 2;
    const input = el(paragraph ? 'textarea' : 'input', {
      id, name: c.custom_id, class: 'm-input', placeholder: c.placeholder, maxlength: c.max_length,
      rows: paragraph ? 4 : null, type: paragraph ? null : 'text', 'aria-required': c.required !== false ? 'true' : null,
      'aria-describedby': `${id}-err`,
    });
    input.value = c.value ?? '';
    const err = el('div', { class: 'm-error', id: `${id}-err`, role: 'alert' });
    const count = c.max_length ? el('span', { class: 'm-count' }) : null;
    const wrap = el('div', { class: 'm-field' },
      el('label', { for: id, class: 'm-label' }, c.label || c.custom_id, c.required !== false ? el('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null),
      input, el('div', { class: 'm-foot' }, err, count));
    const update = () => { if (count) count.textContent = `${input.value.length}/${c.max_length}`; };
    input.addEventListener('input', () => { update(); wrap.classList.remove('invalid'); err.textContent = ''; });
    update();
    return { c, input, err, wrap };
  });
  const submit = el('button', { type: 'submit', id: 'modal-submit', class: 'btn primary' }, 'Submit');
  const form = el('form', { novalidate: true },
    el('header', { class: 'm-head' }, el('h2', { id: 'modal-title' }, md.title || ''),
      el('button', { type: 'button', class: 'm-x', 'aria-label': 'Close', onclick: () => dismissModal(md) }, icon('x', 18))),
    el('div', { class: 'm-body' }, fields.map(f => f.wrap)),
    el('footer', { class: 'm-foot-bar' },
      el('button', { type: 'button', id: 'modal-cancel', class: 'btn link', onclick: () => dismissModal(md) }, 'Cancel'), submit));
  form.addEventListener('submit', async e => {
    e.preventDefault();
    let first = null;
    for (const f of fields) {
      const problem = modalFieldError(f.c, f.input.value);
      f.err.textContent = problem ? `${problem}.` : '';
      f.wrap.classList.toggle('invalid', !!problem);
      if (problem && !first) first = f.input;
    }
    if (first) return first.focus();
    submit.disabled = true;
    try {
      await api('/api/modal', { as: S.as, interaction_id: md.interaction_id, fields: Object.fromEntries(fields.map(f => [f.c.custom_id, f.input.value])) });
      closeModal();
      S.stick = true;
    } catch (err) {
      toast(err.message);
      submit.disabled = false;
    }
  });
  const dialog = el('div', { id: 'modal', class: 'modal', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'modal-title', 'data-custom-id': md.custom_id }, form);
  dialog.addEventListener('keydown', e => {
    if (e.key === 'Escape') { e.preventDefault(); dismissModal(md); }
    if (e.key === 'Tab') { // keep focus inside the dialog
      const f = [...dialog.querySelectorAll('input, textarea, button:not(:disabled)')];
      const i = f.indexOf(document.activeElement);
      if (e.shiftKey && i <= 0) { e.preventDefault(); f[f.length - 1].focus(); } else if (!e.shiftKey && i === f.length - 1) { e.preventDefault(); f[0].focus(); }
    }
  });
  // Outside click closes, unless a text selection drag merely ended there.
  const backdrop = el('div', { class: 'backdrop' }, dialog);
  let downOnBackdrop = false;
  backdrop.addEventListener('mousedown', e => { downOnBackdrop = e.target === backdrop; });
  backdrop.addEventListener('click', e => { if (downOnBackdrop && e.target === backdrop) dismissModal(md); });
  return backdrop;
}

/* ---------- views, members, live updates ---------- */

function openView(view) {
  if (view === S.view) return;
  S.view = view;
  localStorage.setItem(LS.view, view);
  S.unread.delete(view);
  closeSelect(false);
  S.nodes.clear();
  $('#message-list').replaceChildren();
  clearComposer();
  S.stick = true;
  renderAll();
}

function toggleAsMenu(show) {
  const menu = $('#as-menu'), picker = $('#as-picker');
  show = show ?? menu.hidden;
  menu.hidden = !show;
  picker.setAttribute('aria-expanded', String(show));
  if (!show) return;
  menu.replaceChildren(el('div', { class: 'menu-title' }, 'Act as'), ...st().members.map(m => el('button', {
    type: 'button', role: 'menuitemradio', class: 'menu-item', 'aria-checked': String(m.id === S.as), 'data-member': m.name,
    onclick: () => { toggleAsMenu(false); picker.focus(); actAs(m.id); },
  }, avatar(m.name, m.id, 24), el('span', { class: 'mi-name' }, m.name), el('span', { class: 'mi-title' }, m.title),
  m.id === S.as ? icon('check', 16, 'ico mi-check') : null)));
  (menu.querySelector('[aria-checked="true"]') || menu.querySelector('.menu-item'))?.focus();
}

function actAs(id) {
  if (id === S.as) return;
  S.as = id;
  localStorage.setItem(LS.as, id);
  // Another member sees another world: start its unread marks and local UI afresh.
  S.fresh = true;
  S.known.clear();
  S.unread.clear();
  S.chosen.clear();
  closeSelect(false);
  clearComposer();
  S.nodes.clear();
  $('#message-list').replaceChildren();
  S.modalId = null;
  $('#modal-root').replaceChildren();
  S.stick = true;
  refresh();
}

// Counts messages that arrived in views other than the open one.
function trackUnread() {
  const views = [...st().channels.map(c => c.name), 'dm'];
  for (const v of views) {
    const ids = viewMessages(v).map(m => m.id);
    const known = S.known.get(v);
    if (!known || S.fresh) { S.known.set(v, new Set(ids)); continue; }
    for (const id of ids) {
      if (known.has(id)) continue;
      known.add(id);
      if (v !== S.view) S.unread.set(v, (S.unread.get(v) || 0) + 1);
    }
  }
  S.fresh = false;
}

function renderAll() {
  if (!st()) return;
  if (S.view !== 'dm' && !channelByName(S.view)) S.view = st().channels[0]?.name || 'dm';
  renderSidebar();
  renderHeader();
  renderMembers();
  renderMessages();
}

let fetching = false, again = false, retryTimer = 0, offlineToast = false;
async function refresh() {
  if (fetching) { again = true; return; } // coalesce: one fetch in flight, one more after it
  fetching = true;
  try {
    do {
      again = false;
      const as = S.as;
      let s;
      try {
        s = await api(`/api/state${as ? `?as=${encodeURIComponent(as)}` : ''}`);
      } catch (err) {
        // A remembered member the server no longer knows: fall back to its default.
        if (as && err.status >= 400 && err.status < 500) { S.as = null; localStorage.removeItem(LS.as); again = true; continue; }
        throw err;
      }
      if (as !== S.as) { again = true; continue; } // switched member meanwhile
      const members = s.members || [];
      const known = id => members.some(m => m.id === id);
      if (as && !known(as)) { S.as = members[0]?.id || null; again = !!S.as; continue; }
      if (!as) {
        // First visit: take the server's default member, else the first (the admin).
        const want = known(s.me) ? s.me : members[0]?.id;
        if (want && want !== s.me) { S.as = want; again = true; continue; }
        S.as = want || null;
      }
      if (S.as) localStorage.setItem(LS.as, S.as);
      S.state = s;
      trackUnread();
      renderAll();
      syncModal();
    } while (again);
    offlineToast = false;
  } catch (err) {
    if (!offlineToast) toast(`Cannot load the sandbox: ${err.message}. Retrying…`);
    offlineToast = true;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(refresh, 3000);
  } finally {
    fetching = false;
  }
}

function connect() {
  const es = new EventSource('/api/events');
  const setLive = on => { S.live = on; if (st()) renderHeader(); };
  es.onopen = () => { setLive(true); refresh(); }; // catch up on what was missed while away
  es.onmessage = () => refresh();
  es.onerror = () => {
    setLive(false);
    // EventSource retries by itself, except after an HTTP error: then start over.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  };
}

function wireGlobal() {
  $('#as-picker').addEventListener('click', () => toggleAsMenu());
  $('#as-menu').addEventListener('keydown', e => {
    const items = [...$('#as-menu').querySelectorAll('.menu-item')];
    const i = items.indexOf(document.activeElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      items[(i + (e.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length]?.focus();
    } else if (e.key === 'Escape') { toggleAsMenu(false); $('#as-picker').focus(); }
  });
  // Tabbing away closes the menu (clicks outside are handled on mousedown below).
  $('.user-panel').addEventListener('focusout', e => { if (e.relatedTarget && !e.currentTarget.contains(e.relatedTarget)) toggleAsMenu(false); });
  document.addEventListener('mousedown', e => {
    if (S.openSel && !S.openSel.node.contains(e.target)) closeSelect(true);
    if (!e.target.closest('#composer-form')) closePopup();
    if (!e.target.closest('.user-panel')) toggleAsMenu(false);
  });
  // Delegated: these live inside rendered markdown.
  document.addEventListener('click', e => {
    const t = e.target;
    const copy = t.closest('.copy, .copy-inline');
    if (copy) {
      const code = copy.classList.contains('copy') ? copy.closest('.codeblock').querySelector('code') : copy.previousElementSibling;
      return copyText(code.textContent, copy);
    }
    const sp = t.closest('.spoiler');
    if (sp) sp.classList.add('revealed');
    const jump = t.closest('[data-jump]');
    if (jump) openView(jump.dataset.jump);
  });
  document.addEventListener('keydown', e => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target.matches?.('.spoiler, [data-jump]')) { e.preventDefault(); e.target.click(); }
  });
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (not a secure context): select the text so Ctrl+C works.
    const code = button.classList.contains('copy') ? button.closest('.codeblock').querySelector('code') : button.previousElementSibling;
    const range = document.createRange();
    range.selectNodeContents(code);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    if (!document.execCommand('copy')) return toast('Press Ctrl+C to copy the selected text.', 'info');
  }
  button.classList.add('copied');
  if (button.classList.contains('copy')) button.textContent = 'Copied!';
  setTimeout(() => { button.classList.remove('copied'); if (button.classList.contains('copy')) button.textContent = 'Copy'; }, 1500);
}

wireComposer();
wireGlobal();
paintComposer();
refresh();
connect();
