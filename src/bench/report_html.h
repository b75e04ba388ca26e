// The static parts of the HTML report (report.cpp puts the data between them). Everything is
// inline: the page draws its SVG charts with the script below and loads nothing.
#pragma once

namespace hearth::bench {

inline constexpr const char* kReportHtmlHead = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>hearth bench report</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.chart { margin: 8px 0 16px; } svg text { font: 11px system-ui, sans-serif; fill: #333; }
.legend span { display: inline-block; margin-right: 14px; } .sw { width: 10px; height: 10px; display: inline-block; margin-right: 4px; }
.note { color: #666; font-size: 12px; } .warn { color: #b00; }
</style>
</head>
<body>
<h1>hearth bench</h1>
<div id="meta" class="note"></div>
<div id="legend" class="legend"></div>
<h2>Summary (ms; min / median / P95 / max)</h2>
<div id="summary"></div>
<h2>Time to first token</h2>
<div class="chart" id="box-ttft"></div>
<h2>Total time</h2>
<div class="chart" id="box-total"></div>
<h2>TTFT against total time</h2>
<div class="chart" id="scatter"></div>
<h2>Total time against output length, with the fitted lines total = TTFT + n / rate</h2>
<div class="chart" id="fit"></div>
<div id="fits"></div>
<h2>Crossover</h2>
<div id="crossovers"></div>
<div id="cold"></div>
)HTML";

inline constexpr const char* kReportJs = R"JS(
'use strict';
const D = JSON.parse(document.getElementById('bench-data').textContent);
const NS = 'http://www.w3.org/2000/svg';
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const endpoints = D.config.endpoints.map((e) => e.name);
const categories = D.config.categories.map((c) => c.name);
const color = (name) => COLORS[Math.max(0, endpoints.indexOf(name)) % COLORS.length];
const okSamples = D.samples.filter((s) => s.ok);

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function h(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function quantile(sorted, p) {
  if (!sorted.length) return 0;
  const r = p * (sorted.length - 1), lo = Math.floor(r), hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (r - lo);
}
function ticks(lo, hi, n) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}
const fmt = (v, p = 0) => (v === null || v === undefined ? '-' : Number(v).toFixed(p));

// A chart frame: returns {svg, x(v), y(v), w, h} with axes drawn for the given domains.
function frame(parentId, id, opts) {
  const W = opts.width || 1000, H = opts.height || 340, m = { l: 64, r: 16, t: 12, b: opts.bottom || 44 };
  const svg = el('svg', { id, width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img' }, document.getElementById(parentId));
  const [x0, x1] = opts.xdomain || [0, 1], [y0, y1] = opts.ydomain;
  const x = (v) => m.l + ((v - x0) / ((x1 - x0) || 1)) * (W - m.l - m.r);
  const y = (v) => H - m.b - ((v - y0) / ((y1 - y0) || 1)) * (H - m.t - m.b);
  el('rect', { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, fill: '#fff', stroke: '#999' }, svg);
  for (const t of ticks(y0, y1, 6)) {
    el('line', { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), stroke: '#eee' }, svg);
    el('text', { x: m.l - 6, y: y(t) + 4, 'text-anchor': 'end' }, svg, String(t));
  }
  if (opts.xdomain) {
    for (const t of ticks(x0, x1, 10)) {
      el('line', { x1: x(t), x2: x(t), y1: m.t, y2: H - m.b, stroke: '#f2f2f2' }, svg);
      el('text', { x: x(t), y: H - m.b + 16, 'text-anchor': 'middle' }, svg, String(t));
    }
  }
  if (opts.xlabel) el('text', { x: (m.l + W - m.r) / 2, y: H - 6, 'text-anchor': 'middle' }, svg, opts.xlabel);
  el('text', { x: 14, y: (m.t + H - m.b) / 2, 'text-anchor': 'middle', transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})` }, svg, opts.ylabel);
  return { svg, x, y, W, H, m };
}

function boxPlot(parentId, id, field, label) {
  const groups = [];
  for (const c of categories) for (const e of endpoints) {
    const v = okSamples.filter((s) => s.category === c && s.endpoint === e).map((s) => s[field]).sort((a, b) => a - b);
    groups.push({ c, e, v });
  }
  const all = groups.flatMap((g) => g.v);
  const ymax = all.length ? Math.max(...all) * 1.05 : 1;
  const f = frame(parentId, id, { ydomain: [0, ymax], ylabel: label, bottom: 56 });
  const band = (f.W - f.m.l - f.m.r) / Math.max(1, groups.length);
  groups.forEach((g, i) => {
    const cx = f.m.l + band * (i + 0.5), bw = Math.min(40, band * 0.5), col = color(g.e);
    el('text', { x: cx, y: f.H - f.m.b + 14, 'text-anchor': 'middle' }, f.svg, g.e);
    if (endpoints.indexOf(g.e) === 0) {
      el('text', { x: cx + band * (endpoints.length - 1) / 2, y: f.H - f.m.b + 30, 'text-anchor': 'middle', 'font-weight': 'bold' }, f.svg, g.c);
    }
    if (!g.v.length) return;
    const q1 = quantile(g.v, 0.25), q2 = quantile(g.v, 0.5), q3 = quantile(g.v, 0.75);
    const gEl = el('g', { class: 'box', 'data-endpoint': g.e, 'data-category': g.c }, f.svg);
    el('line', { x1: cx, x2: cx, y1: f.y(g.v[0]), y2: f.y(g.v[g.v.length - 1]), stroke: col }, gEl);
    el('rect', { x: cx - bw / 2, y: f.y(q3), width: bw, height: Math.max(1, f.y(q1) - f.y(q3)), fill: col, 'fill-opacity': 0.15, stroke: col }, gEl);
    el('line', { x1: cx - bw / 2, x2: cx + bw / 2, y1: f.y(q2), y2: f.y(q2), stroke: col, 'stroke-width': 2 }, gEl);
    g.v.forEach((v, k) => {
      const jitter = ((k * 0.618) % 1 - 0.5) * bw * 0.9;
      el('circle', { cx: cx + jitter, cy: f.y(v), r: 2.2, fill: col, 'fill-opacity': 0.6 }, gEl);
    });
  });
}

function scatter() {
  const xs = okSamples.map((s) => s.ttft_ms), ys = okSamples.map((s) => s.total_ms);
  const f = frame('scatter', 'chart-scatter', {
    xdomain: [0, (xs.length ? Math.max(...xs) : 1) * 1.05], ydomain: [0, (ys.length ? Math.max(...ys) : 1) * 1.05],
    xlabel: 'TTFT (ms)', ylabel: 'total (ms)', height: 360,
  });
  for (const s of okSamples) {
    el('circle', { cx: f.x(s.ttft_ms), cy: f.y(s.total_ms), r: 3, fill: color(s.endpoint), 'fill-opacity': 0.6 }, f.svg)
      .appendChild(el('title', {}, null, `${s.endpoint} ${s.category} ${s.prompt}: TTFT ${fmt(s.ttft_ms)} ms, total ${fmt(s.total_ms)} ms`));
  }
}

function fitChart() {
  const xs = okSamples.map((s) => s.output_tokens), ys = okSamples.map((s) => s.total_ms);
  const xmax = (xs.length ? Math.max(...xs) : 1) * 1.05;
  const f = frame('fit', 'chart-fit', {
    xdomain: [0, xmax], ydomain: [0, (ys.length ? Math.max(...ys) : 1) * 1.05],
    xlabel: 'output tokens', ylabel: 'total (ms)', height: 380,
  });
  const clip = el('clipPath', { id: 'fit-clip' }, el('defs', {}, f.svg));
  el('rect', { x: f.m.l, y: f.m.t, width: f.W - f.m.l - f.m.r, height: f.H - f.m.t - f.m.b }, clip);
  for (const s of okSamples) {
    el('circle', { cx: f.x(s.output_tokens), cy: f.y(s.total_ms), r: 3, fill: color(s.endpoint), 'fill-opacity': 0.55 }, f.svg);
  }
  for (const fit of D.fits) {
    if (!fit.ok) continue;
    el('line', { class: 'fit-line', 'data-endpoint': fit.endpoint, 'clip-path': 'url(#fit-clip)',
      x1: f.x(0), y1: f.y(fit.ttft_ms), x2: f.x(xmax), y2: f.y(fit.ttft_ms + fit.ms_per_token * xmax),
      stroke: color(fit.endpoint), 'stroke-width': 2 }, f.svg);
  }
  for (const c of D.crossovers) {
    if (c.tokens === null || c.tokens > xmax) continue;
    const b = c.bootstrap;
    if (b.crossed) {
      el('rect', { class: 'crossover-interval', x: f.x(Math.max(0, b.lo)), y: f.m.t, width: Math.max(1, f.x(Math.min(xmax, b.hi)) - f.x(Math.max(0, b.lo))),
        height: f.H - f.m.t - f.m.b, fill: '#888', 'fill-opacity': 0.12 }, f.svg);
    }
    el('line', { class: 'crossover', x1: f.x(c.tokens), x2: f.x(c.tokens), y1: f.m.t, y2: f.H - f.m.b, stroke: '#444', 'stroke-dasharray': '5 4' }, f.svg);
    el('text', { x: f.x(c.tokens) + 4, y: f.m.t + 14 }, f.svg, `${c.a}/${c.b}: n* = ${fmt(c.tokens, 1)}`);
  }
}

function table(parentId, head, rows) {
  const t = h('table'), tr = h('tr');
  head.forEach((x, i) => { const th = h('th', x); if (i < 2) th.className = 'l'; tr.appendChild(th); });
  t.appendChild(tr);
  for (const r of rows) {
    const row = h('tr');
    r.forEach((x, i) => { const td = h('td', x); if (i < 2) td.className = 'l'; row.appendChild(td); });
    t.appendChild(row);
  }
  document.getElementById(parentId).appendChild(t);
}
const quad = (s, p = 0) => (s ? `${fmt(s.min, p)} / ${fmt(s.median, p)} / ${fmt(s.p95, p)} / ${fmt(s.max, p)}` : '-');

document.getElementById('meta').textContent =
  `${D.started_at}; ${D.config.runs} runs (+${D.config.warmup} warmup) per endpoint and category, concurrency ${D.config.concurrency}; ` +
  D.config.endpoints.map((e) => `${e.name}: ${e.api} ${e.url}${e.model ? ' (' + e.model + ')' : ''}`).join('; ') +
  `; ${fmt(D.elapsed_s, 1)} s`;
if (D.aborted) document.getElementById('meta').appendChild(h('div', 'ABORTED: ' + D.abort_reason, 'warn'));
for (const e of endpoints) {
  const s = h('span'), sw = h('span', '', 'sw');
  sw.style.background = color(e);
  s.appendChild(sw);
  s.appendChild(document.createTextNode(e));
  document.getElementById('legend').appendChild(s);
}
table('summary', ['endpoint', 'category', 'ok/n', 'TTFT', 'total', 'output tokens', 'tokens/s', 'failures'],
  D.results.map((r) => [r.endpoint, r.category, `${r.ok}/${r.requests}`, quad(r.ttft_ms), quad(r.total_ms), quad(r.output_tokens),
    quad(r.tokens_per_s), Object.entries(r.failures).map(([k, v]) => `${k} x${v}`).join(', ') || '-']));
boxPlot('box-ttft', 'chart-ttft', 'ttft_ms', 'TTFT (ms)');
boxPlot('box-total', 'chart-total', 'total_ms', 'total (ms)');
scatter();
fitChart();
table('fits', ['endpoint', 'points', 'TTFT (intercept, ms)', 'ms per token (slope)', 'tokens/s (1000 / slope)', 'R²'],
  D.fits.map((f) => [f.endpoint, String(f.points), fmt(f.ttft_ms, 1), fmt(f.ms_per_token, 3), fmt(f.tokens_per_s, 1), fmt(f.r2, 3)]));
for (const c of D.crossovers) document.getElementById('crossovers').appendChild(h('p', c.text));
if (D.cold_start.length) {
  document.getElementById('cold').appendChild(h('h2', 'Cold start (load to first token, ms)'));
  table('cold', ['endpoint', 'runs', 'min / median / P95 / max'], D.cold_start.map((c) => [c.endpoint, String(c.runs), quad(c.ttft_ms)]));
}
document.body.setAttribute('data-rendered', 'true');
)JS";

}  // namespace hearth::bench
