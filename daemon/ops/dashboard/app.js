/* app.js - fetches GET /v1/stats every few seconds and draws the dashboard's SVG charts. */
'use strict';

(function () {
  const REFRESH_MS = 5000;
  const MAX_ERRORS = 10; /* rows in the recent errors table */
  const WINDOWS = ['15m', '1h', '24h', '7d'];
  const PALETTE = ['#4e8df5', '#f08a3e', '#2bb673', '#9b59b6', '#e05d5d', '#16a0a0',
                   '#c2a100', '#d35fb7', '#7f8c3a', '#5b6bd1', '#b5651d', '#2f9bd6'];
  const SVGNS = 'http://www.w3.org/2000/svg';

  const params = new URLSearchParams(location.search);
  let win = WINDOWS.includes(params.get('window')) ? params.get('window') : '1h';
  const key = (location.hash.match(/key=([^&]+)/) || [])[1];
  let last = null;

  const $ = (id) => document.getElementById(id);

  /* ---- formatting ------------------------------------------------------ */
  const fmtInt = (n) => (n == null ? '–' : Math.round(n).toLocaleString('en-US'));
  const fmtPct = (x, d = 1) => (x == null || !isFinite(x) ? '–' : (100 * x).toFixed(d) + '%');
  function fmtUSD(x) {
    if (x == null || !isFinite(x)) return '–';
    const a = Math.abs(x);
    /* below a millionth of a dollar is float residue (a saving of -1.4e-20): $0, no sign */
    if (a < 5e-7) return '$0';
    /* cents and up: fixed decimals; below a cent: two significant digits, never an
     * exponent (toFixed with as many places as they need) */
    const t = a >= 100 ? a.toFixed(0) : a >= 1 ? a.toFixed(2) : a >= 0.01 ? a.toFixed(3)
      : a.toFixed(Math.min(8, 1 - Math.floor(Math.log10(a)))).replace(/0+$/, '');
    return (x < 0 ? '-$' : '$') + t;
  }
  /* Axis labels: as few decimals as the tick step needs. */
  function fmtUSDAxis(step) {
    const d = step >= 1 ? (Number.isInteger(step) ? 0 : 1) : Math.min(8, Math.ceil(-Math.log10(step) - 1e-9) + (String(step).includes('25') ? 1 : 0));
    return (v) => (v === 0 ? '$0' : '$' + v.toFixed(d));
  }
  function fmtMs(ms) {
    if (ms == null || !isFinite(ms)) return '–';
    if (ms >= 10000) return (ms / 1000).toFixed(1) + ' s';
    if (ms >= 1000) return (ms / 1000).toFixed(2) + ' s';
    return Math.round(ms) + ' ms';
  }
  function fmtCompact(n) {
    if (n == null) return '–';
    if (n >= 1e9) return (n / 1e9).toFixed(2) + 'G';
    if (n >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (n >= 1e4) return (n / 1e3).toFixed(0) + 'k';
    if (n >= 1e3) return (n / 1e3).toFixed(1) + 'k';
    return String(n);
  }
  const pad2 = (n) => String(n).padStart(2, '0');
  function fmtClock(ms, withDate) {
    const d = new Date(ms);
    const t = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
    return withDate ? d.getMonth() + 1 + '/' + d.getDate() + ' ' + t : t;
  }
  function fmtSpan(ms) {
    if (ms >= 86400000) return (ms / 86400000).toFixed(ms % 86400000 ? 1 : 0) + ' d';
    if (ms >= 3600000) return (ms / 3600000).toFixed(ms % 3600000 ? 1 : 0) + ' h';
    if (ms >= 60000) return (ms / 60000).toFixed(ms % 60000 ? 1 : 0) + ' min';
    return Math.round(ms / 1000) + ' s';
  }

  /* ---- SVG helpers ----------------------------------------------------- */
  function el(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function add(parent, tag, attrs, text) {
    const e = el(tag, attrs, text);
    parent.appendChild(e);
    return e;
  }
  function tip(e, text) {
    add(e, 'title', {}, text);
    return e;
  }

  /* Sets up an SVG for drawing: viewBox from its size, returns the plot frame. */
  function frame(svg, m) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const r = svg.getBoundingClientRect();
    const W = Math.max(240, Math.round(r.width || 600));
    const H = Math.max(80, Math.round(r.height || 220));
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    return { W, H, x0: m.left, x1: W - m.right, y0: H - m.bottom, y1: m.top };
  }

  /* A "nice" axis from 0 to at least max with about n ticks; counts step by whole numbers. */
  function niceScale(max, n = 4, integer = false) {
    if (!(max > 0)) max = 1;
    const raw = max / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    let step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
    if (integer) step = Math.max(1, Math.ceil(step));
    return { max: Math.ceil(max / step - 1e-9) * step, step };
  }
  const countScale = (max) => niceScale(max, 4, true);

  function yAxis(svg, f, scale, fmt, title) {
    const g = add(svg, 'g', { class: 'axis y' });
    /* room for the widest tick label (about 6.5 px a character) and the title */
    let widest = 0;
    for (let v = 0; v <= scale.max + scale.step / 2; v += scale.step)
      widest = Math.max(widest, String(fmt(v)).length);
    f.x0 = Math.max(f.x0, Math.ceil(widest * 6.5) + (title ? 28 : 10));
    for (let v = 0; v <= scale.max + scale.step / 2; v += scale.step) {
      const y = f.y0 - (v / scale.max) * (f.y0 - f.y1);
      add(g, 'line', { class: 'gridline', x1: f.x0, x2: f.x1, y1: y, y2: y });
      add(g, 'text', { x: f.x0 - 6, y: y + 4, 'text-anchor': 'end' }, fmt(v));
    }
    add(g, 'line', { x1: f.x0, x2: f.x1, y1: f.y0, y2: f.y0 });
    if (title) {
      const cy = (f.y0 + f.y1) / 2;
      add(g, 'text', { class: 'axis-title', x: 12, y: cy, transform: `rotate(-90 12 ${cy})`,
                       'text-anchor': 'middle' }, title);
    }
    return (v) => f.y0 - (v / scale.max) * (f.y0 - f.y1);
  }

  function xTitle(svg, f, title) {
    add(svg, 'text', { class: 'axis-title', x: (f.x0 + f.x1) / 2, y: f.H - 4, 'text-anchor': 'middle' },
        title);
  }

  /* Time labels under a bucketed x axis. */
  function timeAxis(svg, f, tl, xOf) {
    const g = add(svg, 'g', { class: 'axis x' });
    const n = tl.buckets;
    /* at most one label per ~64 px, at a step that divides the buckets evenly */
    const fit = Math.max(2, Math.floor((f.x1 - f.x0) / 64));
    let every = n;
    for (const e of [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60]) {
      if (n % e === 0 && n / e <= fit) { every = e; break; }
    }
    const withDate = tl.bucket_ms * n > 86400000;
    for (let k = 0; k <= n; k += every) {
      const x = xOf(k);
      add(g, 'line', { x1: x, x2: x, y1: f.y0, y2: f.y0 + 4 });
      add(g, 'text', { x, y: f.y0 + 16, 'text-anchor': k === 0 ? 'start' : k + every > n ? 'end' : 'middle' },
          fmtClock(tl.start_ms + k * tl.bucket_ms, withDate));
    }
  }

  function empty(svg, f, text) {
    add(svg, 'text', { class: 'empty', x: (f.x0 + f.x1) / 2, y: (f.y0 + f.y1) / 2,
                       'text-anchor': 'middle' }, text);
  }

  function legend(div, items) {
    div.textContent = '';
    for (const it of items) {
      const s = document.createElement('span');
      const sw = document.createElement('span');
      sw.className = 'sw' + (it.kind ? ' ' + it.kind : '');
      sw.style.background = it.color;
      sw.style.borderColor = it.color;
      s.appendChild(sw);
      s.appendChild(document.createTextNode(it.label));
      div.appendChild(s);
    }
  }

  /* ---- model ----------------------------------------------------------- */

  /* Backends cheapest per request first, so two-tier setups read fast, strong. */
  function backendOrder(d) {
    const names = Object.keys(d.backends || {});
    const cpr = (n) => {
      const b = d.backends[n];
      return b.requests ? b.cost_usd / b.requests : Infinity;
    };
    names.sort((a, b) => cpr(a) - cpr(b) || a.localeCompare(b));
    return names;
  }
  /* A backend's colour from a hash of its name (FNV-1a), so it keeps its colour across
   * refreshes, windows and reloads; two names that hash alike take the next free
   * colour, in the order of their hashes then names, so the pair is stable too. */
  function nameHash(name) {
    let h = 0x811c9dc5;
    for (let i = 0; i < name.length; i++) {
      h ^= name.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h;
  }
  function backendColors(names) {
    const colors = {}, taken = new Set();
    const order = names.slice().sort((a, b) => nameHash(a) - nameHash(b) || a.localeCompare(b));
    for (const b of order) {
      let i = nameHash(b) % PALETTE.length;
      for (let k = 0; k < PALETTE.length && taken.has(i); k++) i = (i + 1) % PALETTE.length;
      taken.add(i);
      colors[b] = PALETTE[i];
    }
    return colors;
  }

  function strongName(d, names) {
    if (d.saving && d.saving.baseline_backend) return d.saving.baseline_backend;
    return names[names.length - 1];
  }

  /* ---- charts ---------------------------------------------------------- */

  function drawShare(d, names, colors) {
    const svg = $('chart-share');
    const f = frame(svg, { left: 52, right: 12, top: 10, bottom: 36 });
    const tl = d.timeline;
    const n = tl ? tl.buckets : 0;
    $('share-hint').textContent = tl ? `requests per ${fmtSpan(tl.bucket_ms)}, stacked by backend` : '';
    legend($('share-legend'), names.map((b) => ({
      color: colors[b], label: `${b} ${fmtPct(d.backends[b].share)}` })));
    if (!tl || !d.requests) {
      yAxis(svg, f, niceScale(1), fmtInt, 'requests');
      empty(svg, f, 'no requests in this window');
      return;
    }
    const totals = new Array(n).fill(0);
    for (const b of names) {
      const s = tl.backends[b];
      if (s) s.requests.forEach((v, k) => { totals[k] += v; });
    }
    const y = yAxis(svg, f, countScale(Math.max(...totals)), fmtInt, 'requests');
    const xOf = (k) => f.x0 + (k / n) * (f.x1 - f.x0);
    const bw = ((f.x1 - f.x0) / n) * 0.78;
    const base = new Array(n).fill(0);
    const bars = add(svg, 'g', { class: 'bars' });
    for (const b of names) {
      const s = tl.backends[b];
      if (!s) continue;
      s.requests.forEach((v, k) => {
        if (!v) return;
        const top = y(base[k] + v);
        const r = add(bars, 'rect', { class: 'bar', 'data-backend': b, x: xOf(k) + bw * 0.14,
                                      y: top, width: bw, height: y(base[k]) - top,
                                      fill: colors[b] });
        tip(r, `${fmtClock(tl.start_ms + k * tl.bucket_ms, n * tl.bucket_ms > 86400000)}  ${b}: ${v} of ${totals[k]}`);
        base[k] += v;
      });
    }
    timeAxis(svg, f, tl, xOf);
  }

  function drawCost(d, names, colors) {
    const svg = $('chart-cost');
    const f = frame(svg, { left: 56, right: 14, top: 14, bottom: 36 });
    const tl = d.timeline;
    const sv = d.saving;
    const strong = strongName(d, names);
    const actualColor = '#3867d6';
    const baseColor = colors[strong] || '#f08a3e';
    if (!tl || !d.requests) {
      legend($('cost-legend'), []);
      yAxis(svg, f, niceScale(1), fmtUSDAxis(0.25), 'USD');
      empty(svg, f, 'no requests in this window');
      return;
    }
    const n = tl.buckets;
    const cost = new Array(n).fill(0), reqs = new Array(n).fill(0);
    for (const b of names) {
      const s = tl.backends[b];
      if (!s) continue;
      s.cost_usd.forEach((v, k) => { cost[k] += v; });
      s.requests.forEach((v, k) => { reqs[k] += v; });
    }
    const cum = (a) => { let s = 0; return a.map((v) => (s += v)); };
    const actual = cum(cost);
    /* The all-strong line: exact when storage gives it per bucket, else the window's
     * baseline spread over time in proportion to requests (marked as an estimate). */
    let baseline = null, estimated = false;
    if (Array.isArray(tl.baseline_cost_usd)) {
      baseline = cum(tl.baseline_cost_usd);
    } else if (sv && sv.baseline_cost_usd != null) {
      const rc = cum(reqs), tot = rc[n - 1] || 1;
      baseline = rc.map((v) => (sv.baseline_cost_usd * v) / tot);
      estimated = true;
    }
    const max = Math.max(actual[n - 1], baseline ? baseline[n - 1] : 0);
    const sc = niceScale(max);
    const y = yAxis(svg, f, sc, fmtUSDAxis(sc.step), 'cumulative USD');
    const xOf = (k) => f.x0 + (k / n) * (f.x1 - f.x0);
    const path = (a) => 'M' + xOf(0) + ',' + y(0) + a.map((v, k) => ` L${xOf(k + 1).toFixed(1)},${y(v).toFixed(1)}`).join('');
    if (baseline) {
      add(svg, 'path', { class: 'line baseline', d: path(baseline), fill: 'none', stroke: baseColor,
                         'stroke-width': 2, 'stroke-dasharray': '6 4' });
      add(svg, 'text', { class: 'value-label', x: f.x1 - 4, y: y(baseline[n - 1]) - 6,
                         'text-anchor': 'end' }, fmtUSD(baseline[n - 1]));
    }
    const area = path(actual) + ` L${xOf(n)},${y(0)} Z`;
    add(svg, 'path', { d: area, fill: actualColor, opacity: 0.12 });
    add(svg, 'path', { class: 'line actual', d: path(actual), fill: 'none', stroke: actualColor,
                       'stroke-width': 2.2 });
    add(svg, 'text', { class: 'value-label', x: f.x1 - 4, y: y(actual[n - 1]) - 6,
                       'text-anchor': 'end' }, fmtUSD(actual[n - 1]));
    timeAxis(svg, f, tl, xOf);
    legend($('cost-legend'), [
      { color: actualColor, label: 'routed (actual)', kind: 'line' },
      ...(baseline ? [{ color: baseColor, label: `all to ${strong}` + (estimated ? ' (est.)' : ''), kind: 'dash' }] : []),
    ]);
    $('cost-hint').textContent = sv && sv.saving_share != null
      ? `saved ${fmtUSD(sv.saving_usd)} (${fmtPct(sv.saving_share)})` : '';
  }

  function drawLatency(d, names, colors) {
    const svg = $('chart-latency');
    const f = frame(svg, { left: 56, right: 10, top: 18, bottom: 36 });
    const P = ['p50', 'p95', 'p99'];
    const OPACITY = [1, 0.62, 0.34];
    legend($('latency-legend'), P.map((p, i) => ({ color: `rgba(90,100,120,${OPACITY[i]})`, label: p })));
    const rows = names.filter((b) => d.backends[b].latency_ms && d.backends[b].latency_ms.n);
    if (!rows.length) {
      yAxis(svg, f, niceScale(1000), fmtMs, 'latency');
      empty(svg, f, 'no latency samples');
      return;
    }
    const max = Math.max(...rows.map((b) => d.backends[b].latency_ms.p99 || 0));
    const y = yAxis(svg, f, niceScale(max), fmtMs, 'latency');
    const gw = (f.x1 - f.x0) / rows.length;
    const bw = Math.min(44, (gw * 0.7) / P.length);
    rows.forEach((b, i) => {
      const L = d.backends[b].latency_ms;
      const cx = f.x0 + gw * (i + 0.5);
      P.forEach((p, j) => {
        const v = L[p];
        if (v == null) return;
        const x = cx + (j - P.length / 2) * bw;
        const r = add(svg, 'rect', { class: 'bar', 'data-backend': b, 'data-p': p, x: x + 1,
                                     y: y(v), width: bw - 2, height: f.y0 - y(v),
                                     fill: colors[b], 'fill-opacity': OPACITY[j] });
        tip(r, `${b} ${p}: ${fmtMs(v)} (${L.n} requests)`);
        /* narrow bars: label p50 and p99 only, so neighbouring labels do not touch */
        if (bw >= 6.5 * fmtMs(v).length + 4 || p !== 'p95')
          add(svg, 'text', { class: 'value-label', x: x + bw / 2, y: y(v) - 4, 'text-anchor': 'middle' },
              fmtMs(v));
      });
      add(svg, 'text', { x: cx, y: f.y0 + 16, 'text-anchor': 'middle' }, b);
    });
    xTitle(svg, f, 'backend');
  }

  function drawScore(d, colors) {
    const svg = $('chart-score');
    const f = frame(svg, { left: 48, right: 10, top: 10, bottom: 36 });
    const h = d.score_histogram;
    const names = backendOrder(d);
    const cheap = colors[names[0]] || PALETTE[0], dear = colors[strongName(d, names)] || PALETTE[1];
    const thr = d.threshold != null && isFinite(d.threshold) ? d.threshold : null;
    legend($('score-legend'), thr == null
      ? [{ color: '#6f8fd8', label: 'routed requests by score (0 easy, 1 hard)' }]
      : [{ color: cheap, label: `below threshold ${thr}` }, { color: dear, label: 'at or above' }]);
    if (!h || !h.routed) {
      $('score-hint').textContent = '';
      yAxis(svg, f, niceScale(1), fmtInt, 'requests');
      empty(svg, f, 'no routed requests');
      return;
    }
    $('score-hint').textContent = `${fmtInt(h.routed)} routed requests`;
    const y = yAxis(svg, f, countScale(Math.max(...h.counts)), fmtInt, 'requests');
    const span = h.hi - h.lo;
    const xOf = (v) => f.x0 + ((v - h.lo) / span) * (f.x1 - f.x0);
    const bw = (f.x1 - f.x0) / h.bins;
    h.counts.forEach((c, i) => {
      if (!c) return;
      const lo = h.lo + (i * span) / h.bins;
      const r = add(svg, 'rect', { class: 'bar', x: xOf(lo) + 1, y: y(c), width: bw - 2,
                                   height: f.y0 - y(c),
                                   fill: thr == null ? '#6f8fd8' : lo + 1e-9 >= thr ? dear : cheap });
      tip(r, `score ${lo.toFixed(2)}–${(lo + span / h.bins).toFixed(2)}: ${c}`);
    });
    const g = add(svg, 'g', { class: 'axis x' });
    for (let v = 0; v <= 4; v++) {
      const t = h.lo + (v * span) / 4;
      add(g, 'line', { x1: xOf(t), x2: xOf(t), y1: f.y0, y2: f.y0 + 4 });
      add(g, 'text', { x: xOf(t), y: f.y0 + 16, 'text-anchor': v === 0 ? 'start' : v === 4 ? 'end' : 'middle' },
          t.toFixed(2));
    }
    if (thr != null)
      add(svg, 'line', { x1: xOf(thr), x2: xOf(thr), y1: f.y1, y2: f.y0,
                         stroke: '#1d2430', 'stroke-dasharray': '4 3' });
    xTitle(svg, f, 'difficulty score');
  }

  /* Two 100% bars: each backend's share of the requests and of the spend. */
  function drawMix(d, names, colors) {
    const svg = $('chart-mix');
    const f = frame(svg, { left: 70, right: 10, top: 8, bottom: 22 });
    if (!d.requests) return empty(svg, f, 'no requests in this window');
    const rows = [
      ['requests', (b) => d.backends[b].requests, d.requests],
      ['spend', (b) => d.backends[b].cost_usd, names.reduce((s, b) => s + d.backends[b].cost_usd, 0)],
    ];
    const bh = Math.min(28, (f.y0 - f.y1) / rows.length - 12);
    const xOf = (v) => f.x0 + v * (f.x1 - f.x0);
    rows.forEach(([label, val, tot], i) => {
      const y = f.y1 + i * ((f.y0 - f.y1) / rows.length) + 6;
      add(svg, 'text', { x: f.x0 - 8, y: y + bh / 2 + 4, 'text-anchor': 'end' }, label);
      let at = 0;
      for (const b of names) {
        const share = tot > 0 ? val(b) / tot : 0;
        if (share <= 0) continue;
        const r = add(svg, 'rect', { class: 'mix', 'data-backend': b, x: xOf(at), y,
                                     width: Math.max(0, xOf(at + share) - xOf(at) - 1), height: bh,
                                     fill: colors[b] });
        tip(r, `${b}: ${fmtPct(share)} of ${label}`);
        if (xOf(at + share) - xOf(at) > 44)
          add(svg, 'text', { class: 'mix-label', x: (xOf(at) + xOf(at + share)) / 2, y: y + bh / 2 + 4,
                             'text-anchor': 'middle' }, fmtPct(share, 0));
        at += share;
      }
    });
    const g = add(svg, 'g', { class: 'axis x' });
    for (let v = 0; v <= 4; v++) {
      add(g, 'text', { x: xOf(v / 4), y: f.y0 + 14,
                       'text-anchor': v === 0 ? 'start' : v === 4 ? 'end' : 'middle' }, v * 25 + '%');
    }
  }

  /* ---- tables and totals ---------------------------------------------- */

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    if (text instanceof Node) td.appendChild(text);
    else td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function emptyRow(tbody, cols, text) {
    const tr = document.createElement('tr');
    const td = cell(tr, text, 'muted');
    td.colSpan = cols;
    tbody.appendChild(tr);
  }

  function drawBackends(d, names, colors) {
    const tbody = $('table-backends').tBodies[0];
    tbody.textContent = '';
    $('backends-hint').textContent = `${names.length} backend${names.length === 1 ? '' : 's'}`;
    if (!names.length) return emptyRow(tbody, 7, 'no requests in this window');
    for (const b of names) {
      const s = d.backends[b];
      const tr = document.createElement('tr');
      const name = document.createElement('span');
      const sw = document.createElement('span');
      sw.className = 'sw';
      sw.style.cssText = `display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:6px;background:${colors[b]}`;
      name.appendChild(sw);
      name.appendChild(document.createTextNode(b));
      cell(tr, name);
      cell(tr, fmtInt(s.requests), 'num');
      const errs = cell(tr, fmtInt(s.errors), 'num');
      if (s.failed_attempts)
        errs.title = `${fmtInt(s.failed_attempts)} of them attempts retried or fallen back from`;
      cell(tr, fmtInt(s.fallbacks_from || 0), 'num');
      cell(tr, fmtMs(s.ttfb_ms && s.ttfb_ms.p50), 'num');
      cell(tr, fmtUSD(s.cost_usd), 'num');
      cell(tr, s.feedback && s.feedback.mean != null
        ? `${s.feedback.mean.toFixed(2)} (${s.feedback.count})` : '–', 'num');
      tbody.appendChild(tr);
    }
  }

  function drawErrors(d) {
    const tbody = $('table-errors').tBodies[0];
    tbody.textContent = '';
    const list = (d.recent_errors || []).slice(0, MAX_ERRORS);
    $('errors-hint').textContent = list.length ? `latest ${list.length} of ${fmtInt(d.errors)}` : '';
    if (!list.length) return emptyRow(tbody, 5, 'no errors in this window');
    for (const e of list) {
      const tr = document.createElement('tr');
      const dt = new Date(e.time_ms);
      cell(tr, `${fmtClock(e.time_ms, d.window_ms > 86400000)}:${pad2(dt.getSeconds())}`);
      cell(tr, e.backend || '–');
      const pill = document.createElement('span');
      pill.className = 'pill' + (e.status === 429 ? ' warn' : '');
      pill.textContent = e.status || '–';
      cell(tr, pill, 'num');
      cell(tr, e.error_kind || '–');
      cell(tr, e.request_id || '–', 'id');
      tbody.appendChild(tr);
    }
  }

  /* Requests a fallback answered: from the backend that failed to the one that answered. */
  function drawFallbacks(d, names, colors) {
    const tbody = $('table-fallbacks').tBodies[0];
    tbody.textContent = '';
    const fb = d.fallbacks || { requests: 0, pairs: [] };
    const pairs = (fb.pairs || []).slice().sort((a, b) => b.requests - a.requests || a.from.localeCompare(b.from));
    $('fallbacks-hint').textContent = d.requests
      ? `${fmtInt(fb.requests)} of ${fmtInt(d.requests)} requests (${fmtPct(fb.requests / d.requests, 2)})` : '';
    if (!pairs.length) return emptyRow(tbody, 4, 'no fallbacks in this window');
    const swatch = (b) => {
      const n = document.createElement('span');
      const sw = document.createElement('span');
      sw.className = 'sw';
      sw.style.cssText = `display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:6px;background:${colors[b] || '#999'}`;
      n.appendChild(sw);
      n.appendChild(document.createTextNode(b));
      return n;
    };
    for (const p of pairs) {
      const tr = document.createElement('tr');
      tr.className = 'fallback';
      cell(tr, swatch(p.from));
      cell(tr, '→', 'arrow');
      cell(tr, swatch(p.to));
      cell(tr, fmtInt(p.requests), 'num');
      tbody.appendChild(tr);
    }
  }

  // strong_share and tier shares, live from the workers (not the window's log): each
  // tier's target, its share in the recent windows and since start, and the cut in force
  function drawShares(d) {
    const tbody = $('table-shares').tBodies[0];
    tbody.textContent = '';
    const routes = d.share_routes || [];
    const pct = (v) => (v == null ? '–' : fmtPct(v));
    $('shares-hint').textContent = routes.length
      ? `live, since start: ${routes.map((r) => `${r.route} ${fmtInt(r.requests)}`).join(', ')}`
      : '';
    if (!routes.length) return emptyRow(tbody, 6, 'no route holds a share (strong_share, tiers = name:40%)');
    for (const r of routes) {
      (r.tiers || []).forEach((t, i) => {
        const tr = document.createElement('tr');
        cell(tr, i ? '' : r.route);
        cell(tr, t.backend || '–');
        cell(tr, pct(t.target), 'num share');
        const off = t.recent != null && t.target != null && Math.abs(t.recent - t.target) > 0.05;
        cell(tr, pct(t.recent), off ? 'num share off' : 'num share');
        cell(tr, pct(t.total), 'num share');
        cell(tr, t.cut == null ? '–' : t.cut.toFixed(3), 'num share');
        tbody.appendChild(tr);
      });
    }
  }

  /* Model versions over time (/v1/stats "models", storage/registry.c): which model served
   * when, a marker where it changed, and the registry's versions with their held-out
   * metrics. The registry keeps each version's latest promotion only, so a version that
   * came back by a rollback shows its latest reign. */
  function drawModels(d) {
    const m = d.models;
    const svg = $('chart-models');
    const f = frame(svg, { left: 12, right: 12, top: 18, bottom: 22 });
    const tbody = $('table-models').tBodies[0];
    tbody.textContent = '';
    const short = (v) => (v || '').slice(0, 8);
    if (!m) {
      $('models-hint').textContent = '';
      legend($('models-legend'), []);
      empty(svg, f, 'no model registry (the daemon runs without [storage])');
      return emptyRow(tbody, 9, 'no model registry');
    }
    const versions = m.versions || [], changes = m.changes || [];
    $('models-hint').textContent = `serving ${short(m.serving)} · ${fmtInt(m.retrains)} retrains, ` +
      `${fmtInt(m.promotions)} promoted since start${m.retraining ? ' · retraining now' : ''}`;
    const tl = d.timeline;
    const t0 = tl ? tl.start_ms : d.from_ms, t1 = tl ? tl.start_ms + tl.buckets * tl.bucket_ms : d.to_ms;
    const xOf = (t) => f.x0 + ((Math.min(Math.max(t, t0), t1) - t0) / (t1 - t0)) * (f.x1 - f.x0);
    const colors = {};
    changes.forEach((c) => {
      if (!(c.version in colors)) colors[c.version] = PALETTE[Object.keys(colors).length % PALETTE.length];
    });
    legend($('models-legend'), [
      { color: '#1f9d63', kind: 'dash', label: 'promotion' },
      { color: '#d64545', kind: 'dash', label: 'rollback' }]);
    /* each change starts a reign that lasts until the next one */
    const band = add(svg, 'g', { class: 'reigns' });
    const yTop = f.y1 + 8, h = Math.max(14, f.y0 - f.y1 - 16);
    changes.forEach((c, i) => {
      const from = c.ms, to = i + 1 < changes.length ? changes[i + 1].ms : t1;
      if (to < t0 || from > t1) return;
      const x = xOf(from), w = Math.max(1, xOf(to) - x);
      tip(add(band, 'rect', { class: 'reign', 'data-version': c.version, x, y: yTop, width: w,
                              height: h, fill: colors[c.version] }),
          `${c.version}: champion from ${fmtClock(from, true)}`);
      if (w > 64) add(band, 'text', { class: 'reign-label', x: x + 6, y: yTop + h / 2 + 4 }, short(c.version));
    });
    let shown = 0;
    for (const c of changes) {
      if (c.ms < t0 || c.ms > t1) continue;
      const x = xOf(c.ms);
      tip(add(svg, 'line', { class: `marker ${c.kind}`, x1: x, x2: x, y1: f.y1 - 6, y2: f.y0 }),
          `${fmtClock(c.ms, true)} ${c.kind}: ${c.version}`);
      add(svg, 'text', { x: x + 3, y: f.y1 + 2 }, c.kind === 'rollback' ? 'rollback' : c.kind === 'first' ? 'first' : 'promoted');
      shown++;
    }
    if (tl) timeAxis(svg, f, tl, (k) => f.x0 + (k / tl.buckets) * (f.x1 - f.x0));
    if (!changes.length) empty(svg, f, 'no model recorded yet');
    else if (!shown && !band.firstChild) empty(svg, f, 'no change of model in this window');
    const pad = (x) => (x == null ? '–' : x.toFixed(3));
    const withDate = t1 - t0 > 86400000 || versions.some((v) => v.created_ms < t0);
    for (const v of versions.slice(0, 8)) {
      const tr = document.createElement('tr');
      cell(tr, short(v.version), 'id vers');
      const pill = document.createElement('span');
      pill.className = 'pill ' + v.status;
      pill.textContent = v.status;
      cell(tr, pill);
      cell(tr, v.source);
      cell(tr, fmtClock(v.created_ms, withDate));
      cell(tr, v.promoted_ms ? fmtClock(v.promoted_ms, withDate) : '–');
      cell(tr, pad(v.apgr), 'num vers');
      cell(tr, v.apgr != null && v.parent_apgr != null
        ? `${v.apgr >= v.parent_apgr ? '+' : ''}${(v.apgr - v.parent_apgr).toFixed(3)} (${short(v.parent)})` : '–', 'num vers');
      cell(tr, v.holdout_n == null ? '–' : fmtInt(v.holdout_n), 'num vers');
      cell(tr, v.train_examples == null ? '–' : fmtInt(v.train_examples), 'num vers');
      tbody.appendChild(tr);
    }
    if (!versions.length) emptyRow(tbody, 9, 'no model versions yet');
  }

  function drawKpis(d, names) {
    const strong = strongName(d, names);
    const mins = d.window_ms / 60000;
    $('kpi-requests').textContent = fmtInt(d.requests);
    $('kpi-rate').textContent = `${(d.requests / mins).toFixed(1)} / min over ${d.window}`;
    const sb = d.backends[strong];
    $('kpi-share').textContent = sb ? fmtPct(sb.share) : '–';
    $('kpi-share-note').textContent = sb ? `${fmtInt(sb.requests)} to ${strong}` : '';
    $('kpi-cost').textContent = fmtUSD(d.cost_usd);
    $('kpi-tokens').textContent = `${fmtCompact(d.tokens_in)} in · ${fmtCompact(d.tokens_out)} out tokens`;
    const sv = d.saving;
    $('kpi-saving').textContent = sv ? fmtUSD(sv.saving_usd) : '–';
    $('kpi-saving-note').textContent = sv
      ? `${fmtPct(sv.saving_share)} below ${fmtUSD(sv.baseline_cost_usd)}` : 'no backend prices';
    $('kpi-errors').textContent = fmtInt(d.errors);
    $('kpi-error-rate').textContent = !d.requests ? ''
      : d.backend_errors != null
        ? `${fmtPct(d.errors / d.requests, 2)} of requests · ${fmtInt(d.backend_errors)} backend, ${fmtInt(d.client_errors)} client`
        : `${fmtPct(d.errors / d.requests, 2)} of requests`;
    const fb = d.feedback;
    $('kpi-feedback').textContent = fb && fb.mean != null ? fb.mean.toFixed(2) : '–';
    $('kpi-feedback-note').textContent = fb ? `${fmtInt(fb.count)} ratings` : '';
    // the learning loop: labels from the judge and feedback, and what the shadow and
    // judge calls cost (they are not in the figures above)
    const ln = d.learning;
    const lb = ln && ln.labels;
    $('kpi-labels').textContent = lb ? fmtInt((lb.judge || 0) + (lb.feedback || 0) + (lb.offline || 0)) : '–';
    $('kpi-labels-note').textContent = ln
      ? `${fmtUSD((ln.shadow_cost_usd || 0) + (ln.judge_cost_usd || 0))} on ${fmtInt((ln.shadow_calls || 0) + (ln.judge_calls || 0))} shadow + judge calls`
      : '';
    // the cascade (since the daemon started): escalation rate, what the escalated fast
    // calls cost and what the served fast answers saved
    const cs = d.cascade;
    $('kpi-cascade').textContent = cs && cs.judged ? fmtPct(cs.escalation_rate) : '–';
    $('kpi-cascade-note').textContent = cs && cs.judged
      ? `of ${fmtInt(cs.judged)} · cost ${fmtUSD(cs.escalation_cost_usd)} · saved ${fmtUSD(cs.saved_usd)}`
      : 'no cascade yet';
  }

  function render(d) {
    const names = backendOrder(d);
    const colors = backendColors(names);
    drawKpis(d, names);
    drawShare(d, names, colors);
    drawCost(d, names, colors);
    drawLatency(d, names, colors);
    drawScore(d, colors);
    drawBackends(d, names, colors);
    drawMix(d, names, colors);
    drawShares(d);
    drawErrors(d);
    drawFallbacks(d, names, colors);

    drawModels(d);
    document.body.dataset.requests = d.requests;
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }

  /* ---- fetching -------------------------------------------------------- */

  function setStatus(ok, text) {
    $('status-dot').className = 'dot ' + (ok ? 'ok' : 'err');
    $('status').textContent = text;
  }

  async function refresh() {
    const url = `/v1/stats?window=${encodeURIComponent(win)}`;
    $('source').textContent = url;
    try {
      const r = await fetch(url, { cache: 'no-store',
                                   headers: key ? { Authorization: `Bearer ${key}` } : {} });
      if (!r.ok) {
        const e = new Error(`${r.status} ${r.statusText}`.trim());
        e.status = r.status;
        throw e;
      }
      last = await r.json();
      render(last);
      $('banner').hidden = true;
      const t = new Date();
      setStatus(true, `updated ${pad2(t.getHours())}:${pad2(t.getMinutes())}:${pad2(t.getSeconds())}`);
    } catch (err) {
      setStatus(false, 'stats unavailable');
      $('banner').hidden = false;
      $('banner').textContent = `Could not load ${url}: ${err.message}` +
        (last ? ' (showing the last good data)' : '');
      if (err.status === 401 || err.status === 403) {
        /* the stats need a key: say how to give the page one (kept in the fragment,
         * which the browser never sends to any server) */
        const u = new URL(location.href);
        u.hash = 'key=YOUR_KEY';
        $('banner').textContent = (key ? `The key given in the address was refused (${err.status}). `
          : `The stats need a key (${err.status}). `) +
          `Open ${u.href}, with a client key from [auth] keys_file, or an admin key ` +
          `(admin_keys_file) when [auth] stats_need_admin = yes; the page sends it as ` +
          `Authorization: Bearer.`;
        $('banner').dataset.kind = 'auth';
      }
    }
  }

  function windows() {
    const nav = $('windows');
    for (const w of WINDOWS) {
      const b = document.createElement('button');
      b.textContent = w;
      b.className = w === win ? 'on' : '';
      b.addEventListener('click', () => {
        win = w;
        for (const x of nav.children) x.className = x.textContent === w ? 'on' : '';
        const u = new URL(location.href);
        u.searchParams.set('window', w);
        history.replaceState(null, '', u);
        refresh();
      });
      nav.appendChild(b);
    }
  }

  windows();
  refresh();
  setInterval(refresh, REFRESH_MS);
  let t = null;
  window.addEventListener('resize', () => {
    clearTimeout(t);
    t = setTimeout(() => last && render(last), 150);
  });
})();
