#!/usr/bin/env node
// HTTP benchmark client for hearth serve and llama.cpp's llama-server: the same client, the same
// requests, one server at a time. node >= 20, no dependencies (global fetch, streamed bodies).
// bench/run-server-bench.sh drives it; it can also be pointed at any running server:
//
//   node bench/server_bench.mjs run --url http://127.0.0.1:8080 --label llama-server \
//        --suites chat,cold,concurrent,typing [--model NAME] [--runs 5] [--warmup 1] \
//        [--n-predict 128] [--streams 2,4] [--conc-runs 3] [--steps 50] [--fim-n-predict 16] \
//        [--out FILE.json]
//   node bench/server_bench.mjs report RESULT.json     # tables + ratios from run-server-bench.sh's JSON
//   node bench/server_bench.mjs typing-file            # prints the generated source file
//
// Suites (all requests stream, temperature 0):
//   chat        POST /v1/chat/completions, a fixed chat prompt, max_tokens N (also ignore_eos: true,
//               which llama-server honours and hearth's OpenAI surface ignores, so a
//               random-weight model may stop early on hearth: `tokens` shows how many came).
//               1 warmup + R runs. The same prompt every run: after the warmup both servers
//               reuse the cached prompt, so TTFT here is request handling + one decode step.
//   cold        POST /completion, n_predict N, ignore_eos: true (both servers), a ~300-token
//               prompt that starts with a per-run nonce, so no prefix is cached: TTFT includes
//               the whole prefill. Exactly N tokens per run: this is the decode-speed figure.
//   concurrent  K simultaneous /completion streams (K from --streams), each n_predict N with
//               ignore_eos and its own prompt; aggregate tokens/s = all tokens / wall time from
//               the first request sent to the last stream finished. 1 warmup + C runs per K.
//   typing      autocomplete: a generated ~2,000-token Python file, the cursor at a line start
//               in the middle; one warmup /infill on a tiny input, one cold /infill of the
//               whole file (reported apart), then S /infill requests, each with 1-4 more
//               characters typed at the cursor (prefix grows, suffix unchanged),
//               n_predict 16, ignore_eos, cache_prompt true.
// TTFT = time from sending the request to the first streamed event with non-empty text.
// Decode tokens/s = (tokens - 1) / (time of last text event - time of first text event), with
// the token count the server reports in its final event (usage / tokens_predicted).
import { writeFileSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

// ---- small utilities -----------------------------------------------------------------------

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const key = a.slice(2);
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) out[key] = true;
      else { out[key] = next; i++; }
    } else {
      out._.push(a);
    }
  }
  return out;
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function quantile(values, q) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  // nearest-rank: the smallest value with at least q of the data at or below it
  const rank = Math.max(1, Math.ceil(q * v.length));
  return v[rank - 1];
}
export const median = (v) => {
  const s = v.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
export const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;
const round = (x, d = 1) => (Number.isFinite(x) ? Number(x.toFixed(d)) : null);

// ---- generated text ------------------------------------------------------------------------

const NOUNS = ['record', 'buffer', 'session', 'request', 'token', 'account', 'invoice', 'segment', 'cache',
  'batch', 'schedule', 'report', 'channel', 'payload', 'vector', 'window', 'profile', 'message', 'order', 'node'];
const VERBS = ['load', 'parse', 'merge', 'validate', 'compute', 'flush', 'encode', 'decode', 'resolve', 'update',
  'collect', 'filter', 'render', 'normalize', 'score', 'split', 'index', 'prune', 'attach', 'emit'];
const ATTRS = ['size', 'weight', 'offset', 'priority', 'count', 'timestamp', 'score', 'limit', 'depth', 'version'];

// A deterministic, realistic-looking Python module of about `chars` characters.
export function generateSource(chars = 7600, seed = 42) {
  const rnd = mulberry32(seed);
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  const cap = (s) => s[0].toUpperCase() + s.slice(1);
  const lines = [
    '"""Utilities for the ingestion pipeline: loading, validating and scoring records."""',
    'from __future__ import annotations',
    '',
    'import dataclasses',
    'import json',
    'import logging',
    'from typing import Iterable, Optional',
    '',
    'log = logging.getLogger(__name__)',
    '',
  ];
  let text = lines.join('\n') + '\n';
  let k = 0;
  while (text.length < chars) {
    const noun = pick(NOUNS), other = pick(NOUNS), verb = pick(VERBS), attr = pick(ATTRS), attr2 = pick(ATTRS);
    const cls = cap(noun) + cap(pick(['store', 'manager', 'builder', 'index', 'queue']));
    const block = [];
    if (k % 3 === 0) {
      block.push('', '@dataclasses.dataclass', `class ${cls}:`, `    """Keeps ${noun}s ordered by ${attr}."""`, '',
        `    ${attr}: int = ${Math.floor(rnd() * 100)}`, `    ${attr2}: float = ${(rnd() * 10).toFixed(2)}`,
        `    items: list = dataclasses.field(default_factory=list)`, '',
        `    def ${verb}(self, ${other}: dict) -> bool:`,
        `        """${cap(verb)} one ${other} into the ${noun} store."""`,
        `        if not ${other} or ${other}.get("${attr}", 0) > self.${attr}:`,
        `            log.debug("skipping %s", ${other})`,
        '            return False',
        `        self.items.append(${other})`,
        `        self.items.sort(key=lambda x: x.get("${attr2}", 0))`,
        '        return True');
    } else if (k % 3 === 1) {
      block.push('', '',
        `def ${verb}_${noun}s(${noun}s: Iterable[dict], threshold: int = ${Math.floor(rnd() * 50) + 1}) -> list:`,
        `    """${cap(verb)} every ${noun} whose ${attr} is above the threshold."""`,
        '    result = []',
        `    for index, ${noun} in enumerate(${noun}s):`,
        `        value = ${noun}.get("${attr}", 0) * ${(rnd() * 3 + 1).toFixed(1)}`,
        '        if value > threshold:',
        `            result.append({"index": index, "${attr}": value, "${other}": ${noun}.get("${other}")})`,
        '        elif value < 0:',
        `            raise ValueError(f"negative ${attr} at {index}: {value}")`,
        '    return result');
    } else {
      block.push('', '',
        `def read_${noun}_${other}(path: str, limit: Optional[int] = None) -> dict:`,
        `    """Read ${noun} data from a JSON file and index it by ${attr}."""`,
        '    with open(path, encoding="utf-8") as handle:',
        '        data = json.load(handle)',
        '    out = {}',
        `    for entry in data.get("${noun}s", [])[:limit]:`,
        `        key = entry.get("${attr}")`,
        '        if key is None:',
        '            continue',
        `        out.setdefault(key, []).append(entry.get("${other}", ${Math.floor(rnd() * 1000)}))`,
        `    log.info("read %d ${noun}s from %s", len(out), path)`,
        '    return out');
    }
    text += block.join('\n') + '\n';
    k++;
  }
  return text;
}

// What the user types at the cursor, a few characters per keystroke.
export const TYPED = [
  'def summarize_batches(batches: list, limit: int = 10) -> list:',
  '    """Return the heaviest batches first, at most limit of them."""',
  '    ranked = sorted(batches, key=lambda b: b.get("weight", 0), reverse=True)',
  '    total = sum(b.get("weight", 0) for b in ranked)',
  '    log.info("summarized %d batches, total weight %d", len(ranked), total)',
  '    return ranked[:limit]',
  '', '', '',
].join('\n');

export function typingSession({ chars = 7600, seed = 42, steps = 50 } = {}) {
  const file = generateSource(chars, seed);
  // The cursor: on the blank line between two top-level definitions nearest the middle.
  let mid = file.indexOf('\n\n\n', Math.floor(file.length / 2));
  mid = mid < 0 ? Math.floor(file.length / 2) : mid + 2;
  const prefix0 = file.slice(0, mid), suffix = file.slice(mid);
  const rnd = mulberry32(seed + 1);
  const prefixes = [];
  let typed = 0;
  for (let i = 0; i < steps; i++) {
    typed += 1 + Math.floor(rnd() * 4);  // 1-4 characters per keystroke burst
    prefixes.push(prefix0 + TYPED.repeat(Math.ceil((typed + 1) / TYPED.length)).slice(0, typed));
  }
  return { file, prefix0, suffix, prefixes };
}

function coldPrompt(nonce) {
  // ~300 tokens of code, with the nonce first so that no prefix is shared between runs.
  return `# run ${nonce}\n` + generateSource(1000, 7).slice(0, 1000) + '\n';
}

const CHAT_MESSAGES = [
  { role: 'system', content: 'You are a concise coding assistant.' },
  { role: 'user', content: 'Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation, and explain how it works.' },
];

// ---- one streamed request ------------------------------------------------------------------

// POSTs `body` and reads the SSE stream. Returns timings (ms from sending) and what the final
// events said (token counts, cache use, server timings).
async function streamRequest(url, body) {
  const t0 = performance.now();
  let res;
  try {
    res = await fetch(url, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(`${url}: ${e.message}${e.cause ? ` (${e.cause.code ?? e.cause.message ?? e.cause})` : ''}`);
  }
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}: ${(await res.text()).slice(0, 500)}`);
  const r = {
    headers_ms: performance.now() - t0, first_event_ms: null, ttft_ms: null, last_text_ms: null, total_ms: null,
    text_events: 0, text: '', tokens: null, prompt_tokens: null, cache_n: null, prompt_n: null,
    server_prompt_ms: null, server_predicted_per_second: null,
  };
  const onEvent = (ev, at) => {
    if (r.first_event_ms === null) r.first_event_ms = at;
    let text = '';
    if (Array.isArray(ev.choices)) {  // OpenAI chat chunk
      text = ev.choices[0]?.delta?.content ?? '';
    } else if (typeof ev.content === 'string') {  // llama.cpp /completion, /infill
      text = ev.content;
    }
    if (text) {
      if (r.ttft_ms === null) r.ttft_ms = at;
      r.last_text_ms = at;
      r.text_events++;
      r.text += text;
    }
    if (ev.usage) {
      r.tokens = ev.usage.completion_tokens ?? r.tokens;
      r.prompt_tokens = ev.usage.prompt_tokens ?? r.prompt_tokens;
      const cached = ev.usage.prompt_tokens_details?.cached_tokens;
      if (cached !== undefined && r.cache_n === null) r.cache_n = cached;
    }
    if (ev.stop === true && ev.tokens_predicted !== undefined) {
      r.tokens = ev.tokens_predicted;
      r.prompt_tokens = ev.tokens_evaluated ?? r.prompt_tokens;
    }
    if (ev.timings) {
      r.cache_n = ev.timings.cache_n ?? r.cache_n;
      r.prompt_n = ev.timings.prompt_n ?? r.prompt_n;
      r.server_prompt_ms = ev.timings.prompt_ms ?? r.server_prompt_ms;
      r.server_predicted_per_second = ev.timings.predicted_per_second ?? r.server_predicted_per_second;
      if (r.tokens === null && ev.timings.predicted_n !== undefined) r.tokens = ev.timings.predicted_n;
    }
  };
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    const at = performance.now() - t0;
    buf += decoder.decode(chunk, { stream: true }).replace(/\r\n/g, '\n');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of event.split('\n')) {
        if (line.startsWith('error:')) throw new Error(`${url}: stream error: ${line}`);
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]' || data === '') continue;
        const ev = JSON.parse(data);
        if (ev.error) throw new Error(`${url}: stream error: ${JSON.stringify(ev.error)}`);
        onEvent(ev, at);
      }
    }
  }
  r.total_ms = performance.now() - t0;
  if (r.ttft_ms === null) r.ttft_ms = r.total_ms;  // nothing streamed: the answer was empty
  r.decode_tps = r.tokens > 1 && r.last_text_ms > r.ttft_ms ? (1000 * (r.tokens - 1)) / (r.last_text_ms - r.ttft_ms) : null;
  delete r.text;
  return r;
}

async function postJson(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

async function countTokens(base, model, content) {
  try {
    const r = await postJson(`${base}/tokenize`, { model, content });
    return Array.isArray(r.tokens) ? r.tokens.length : null;
  } catch {
    return null;
  }
}

// ---- suites --------------------------------------------------------------------------------

function summarize(runs, { tps = true } = {}) {
  const s = {
    runs: runs.length,
    ttft_ms_median: round(median(runs.map((r) => r.ttft_ms)), 2),
    ttft_ms_p95: round(quantile(runs.map((r) => r.ttft_ms), 0.95), 2),
    total_ms_median: round(median(runs.map((r) => r.total_ms)), 1),
    tokens_median: median(runs.map((r) => r.tokens)),
    prompt_tokens_median: median(runs.map((r) => r.prompt_tokens)),
    cache_n_median: median(runs.map((r) => r.cache_n)),
    prompt_n_median: median(runs.map((r) => r.prompt_n)),
  };
  if (tps) {
    s.decode_tps_median = round(median(runs.map((r) => r.decode_tps)), 2);
    s.server_predicted_per_second_median = round(median(runs.map((r) => r.server_predicted_per_second)), 2);
  }
  return s;
}

async function suiteChat(o) {
  const body = (stream = true) => ({
    model: o.model, messages: CHAT_MESSAGES, max_tokens: o.nPredict, temperature: 0, stream,
    stream_options: { include_usage: true }, ignore_eos: true, cache_prompt: true,
  });
  const runs = [];
  for (let i = 0; i < o.warmup + o.runs; i++) {
    const r = await streamRequest(`${o.url}/v1/chat/completions`, body());
    if (i >= o.warmup) runs.push(r);
    log(o, `chat ${i < o.warmup ? 'warmup' : 'run ' + (i - o.warmup + 1)}: ttft ${r.ttft_ms.toFixed(1)} ms, ${r.tokens} tokens, ${r.decode_tps?.toFixed(1)} t/s`);
  }
  return { endpoint: '/v1/chat/completions', max_tokens: o.nPredict, summary: summarize(runs), requests: runs };
}

async function suiteCold(o) {
  const runs = [];
  const stamp = Date.now().toString(36);
  for (let i = 0; i < o.warmup + o.runs; i++) {
    const r = await streamRequest(`${o.url}/completion`, {
      model: o.model, prompt: coldPrompt(`${stamp}-${i}`), n_predict: o.nPredict, temperature: 0,
      ignore_eos: true, cache_prompt: true, stream: true,
    });
    if (i >= o.warmup) runs.push(r);
    log(o, `cold ${i < o.warmup ? 'warmup' : 'run ' + (i - o.warmup + 1)}: ttft ${r.ttft_ms.toFixed(1)} ms (prompt ${r.prompt_tokens}, cached ${r.cache_n}), ${r.tokens} tokens, ${r.decode_tps?.toFixed(1)} t/s`);
  }
  return { endpoint: '/completion', n_predict: o.nPredict, ignore_eos: true, summary: summarize(runs), requests: runs };
}

async function suiteConcurrent(o) {
  const levels = {};
  const failures = [];
  const stamp = Date.now().toString(36);
  for (const k of o.streams) {
    const runs = [];
    for (let i = 0; i < o.warmup + o.concRuns; i++) {
      const t0 = performance.now();
      let results;
      try {
        results = await Promise.all(Array.from({ length: k }, (_, j) => streamRequest(`${o.url}/completion`, {
          model: o.model, prompt: `# stream ${j} of run ${stamp}-${k}-${i}\n` + generateSource(300, 11 + j).slice(0, 300),
          n_predict: o.nPredict, temperature: 0, ignore_eos: true, cache_prompt: true, stream: true,
        })));
      } catch (e) {
        // A failed run is recorded and skipped, not fatal: the other server's figures still count.
        log(o, `concurrent ${k} run ${i + 1} FAILED: ${e.message}`);
        failures.push({ streams: k, run: i + 1, error: e.message });
        if (failures.length > 3) throw e;
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      const wall = performance.now() - t0;
      const tokens = results.reduce((a, r) => a + (r.tokens ?? 0), 0);
      const run = {
        wall_ms: round(wall, 1), tokens, aggregate_tps: round((1000 * tokens) / wall, 2),
        ttft_ms: results.map((r) => round(r.ttft_ms, 1)), stream_tokens: results.map((r) => r.tokens),
      };
      if (i >= o.warmup) runs.push(run);
      log(o, `concurrent ${k} ${i < o.warmup ? 'warmup' : 'run ' + (i - o.warmup + 1)}: ${tokens} tokens in ${wall.toFixed(0)} ms = ${run.aggregate_tps} t/s`);
    }
    levels[k] = {
      streams: k,
      aggregate_tps_median: round(median(runs.map((r) => r.aggregate_tps)), 2),
      ttft_ms_median: round(median(runs.flatMap((r) => r.ttft_ms)), 1),
      runs,
    };
  }
  return { endpoint: '/completion', n_predict: o.nPredict, ignore_eos: true, levels, failures };
}

async function suiteTyping(o) {
  const session = typingSession({ chars: o.typingChars, seed: 42, steps: o.steps });
  const infill = (prefix, nPredict = o.fimNPredict) => ({
    model: o.model, input_prefix: prefix, input_suffix: session.suffix, n_predict: nPredict, temperature: 0,
    ignore_eos: true, cache_prompt: true, stream: true,
  });
  const fileTokens = await countTokens(o.url, o.model, session.file);
  const prefixTokens = await countTokens(o.url, o.model, session.prefix0);
  // Warm the server up (model load, first-use allocations) on a tiny unrelated input.
  await streamRequest(`${o.url}/infill`, { ...infill('def f(x'), input_suffix: ')\n', n_predict: 2 });
  const cold = await streamRequest(`${o.url}/infill`, infill(session.prefix0));
  log(o, `typing cold: ttft ${cold.ttft_ms.toFixed(1)} ms, prompt ${cold.prompt_tokens} tokens (evaluated ${cold.prompt_n}, cached ${cold.cache_n})`);
  const steps = [];
  for (let i = 0; i < session.prefixes.length; i++) {
    const r = await streamRequest(`${o.url}/infill`, infill(session.prefixes[i]));
    r.prefix_chars = session.prefixes[i].length;
    steps.push(r);
    log(o, `typing ${i + 1}: ttft ${r.ttft_ms.toFixed(1)} ms, total ${r.total_ms.toFixed(1)} ms, evaluated ${r.prompt_n}, cached ${r.cache_n}`);
  }
  const s = summarize(steps, { tps: false });
  s.ttft_ms_p95 = round(quantile(steps.map((r) => r.ttft_ms), 0.95), 2);
  s.ttft_ms_max = round(Math.max(...steps.map((r) => r.ttft_ms)), 2);
  s.total_ms_p95 = round(quantile(steps.map((r) => r.total_ms), 0.95), 1);
  s.prompt_n_p95 = quantile(steps.map((r) => r.prompt_n), 0.95);
  return {
    endpoint: '/infill', n_predict: o.fimNPredict, ignore_eos: true, steps: steps.length,
    file_chars: session.file.length, file_tokens: fileTokens, prefix_chars: session.prefix0.length,
    prefix_tokens: prefixTokens, suffix_chars: session.suffix.length,
    typed_chars: session.prefixes[session.prefixes.length - 1].length - session.prefix0.length,
    cold: { ttft_ms: round(cold.ttft_ms, 1), total_ms: round(cold.total_ms, 1), prompt_tokens: cold.prompt_tokens, prompt_n: cold.prompt_n, cache_n: cold.cache_n },
    summary: s, requests: steps,
  };
}

function log(o, msg) {
  if (!o.quiet) process.stderr.write(`[${o.label}] ${msg}\n`);
}

async function run(args) {
  const o = {
    url: String(args.url || 'http://127.0.0.1:8080').replace(/\/$/, ''),
    label: args.label || 'server',
    model: args.model || undefined,
    suites: String(args.suites || 'chat,cold,concurrent,typing').split(',').filter(Boolean),
    runs: Number(args.runs ?? 5),
    warmup: Number(args.warmup ?? 1),
    nPredict: Number(args['n-predict'] ?? 128),
    streams: String(args.streams ?? '2,4').split(',').map(Number),
    concRuns: Number(args['conc-runs'] ?? 3),
    steps: Number(args.steps ?? 50),
    fimNPredict: Number(args['fim-n-predict'] ?? 16),
    typingChars: Number(args['typing-chars'] ?? 7600),
    quiet: Boolean(args.quiet),
  };
  const out = { label: o.label, url: o.url, model: o.model ?? null, started: new Date().toISOString(), suites: {} };
  const fns = { chat: suiteChat, cold: suiteCold, concurrent: suiteConcurrent, typing: suiteTyping };
  for (const s of o.suites) {
    if (!fns[s]) throw new Error(`unknown suite '${s}' (chat, cold, concurrent, typing)`);
    out.suites[s] = await fns[s](o);
  }
  out.finished = new Date().toISOString();
  const text = JSON.stringify(out, null, 1);
  if (args.out) writeFileSync(args.out, text + '\n');
  else process.stdout.write(text + '\n');
}

// ---- report --------------------------------------------------------------------------------

const fmt = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? (a / b).toFixed(2) : '–');

function table(header, rows) {
  return ['| ' + header.join(' | ') + ' |', '|' + header.map(() => '---').join('|') + '|',
    ...rows.map((r) => '| ' + r.join(' | ') + ' |')].join('\n');
}

export function report(result) {
  const runs = result.runs || [];
  const out = [];
  const base = (suite) => runs.find((r) => r.suites?.[suite] && r.baseline);
  out.push(`date ${result.date}, hearth ${result.hearth_commit}, llama.cpp ${result.llama_commit?.slice(0, 10)}, ` +
    `${result.cpu}, threads ${result.threads}, ctx/seq ${result.ctx}, parallel ${result.parallel}, ` +
    `load before ${result.load_before}, after ${result.load_after}` +
    (result.quiet === false ? ' (NOT quiet)' : '') + (result.nice ? `, servers and client at nice ${result.nice}` : ''));
  for (const suite of ['chat', 'cold']) {
    const b = base(suite);
    const rows = runs.filter((r) => r.suites?.[suite]).map((r) => {
      const s = r.suites[suite].summary, bs = b?.suites[suite].summary;
      return [r.label, fmt(s.ttft_ms_median, 1), fmt(s.decode_tps_median, 1), fmt(s.server_predicted_per_second_median, 1),
        String(s.tokens_median), String(s.prompt_tokens_median), String(s.cache_n_median ?? '–'),
        ratio(s.ttft_ms_median, bs?.ttft_ms_median), ratio(s.decode_tps_median, bs?.decode_tps_median)];
    });
    if (!rows.length) continue;
    const what = suite === 'chat'
      ? `(a) single stream, /v1/chat/completions, fixed prompt (cached after the warmup), max_tokens ${runs.find((r) => r.suites.chat).suites.chat.max_tokens}; median of ${runs.find((r) => r.suites.chat).suites.chat.summary.runs}`
      : `(a) single stream, /completion, fresh ~300-token prompt per run, n_predict ${runs.find((r) => r.suites.cold).suites.cold.n_predict} + ignore_eos; median of ${runs.find((r) => r.suites.cold).suites.cold.summary.runs}`;
    out.push('', what);
    out.push(table(['server', 'TTFT ms', 'decode t/s', 'server-reported t/s', 'tokens', 'prompt tokens', 'cached', 'TTFT ratio', 't/s ratio'], rows));
  }
  const bc = base('concurrent');
  const concRows = [];
  for (const r of runs.filter((x) => x.suites?.concurrent)) {
    for (const [k, lv] of Object.entries(r.suites.concurrent.levels)) {
      const bl = bc?.suites.concurrent.levels[k];
      concRows.push([r.label, k, fmt(lv.aggregate_tps_median, 1), fmt(lv.ttft_ms_median, 0), ratio(lv.aggregate_tps_median, bl?.aggregate_tps_median)]);
    }
  }
  if (concRows.length) {
    out.push('', '(b) concurrent streams, /completion, 128 tokens each + ignore_eos; median of the runs');
    out.push(table(['server', 'streams', 'aggregate t/s', 'median TTFT ms', 't/s ratio'], concRows));
  }
  const bt = base('typing');
  const typingRows = runs.filter((r) => r.suites?.typing).map((r) => {
    const t = r.suites.typing, s = t.summary, bs = bt?.suites.typing.summary;
    return [r.label, fmt(s.ttft_ms_median, 1), fmt(s.ttft_ms_p95, 1), fmt(s.total_ms_median, 1),
      String(s.prompt_n_median), String(s.cache_n_median), fmt(t.cold.ttft_ms, 0),
      ratio(s.ttft_ms_median, bs?.ttft_ms_median), ratio(s.ttft_ms_p95, bs?.ttft_ms_p95)];
  });
  if (typingRows.length) {
    const t = runs.find((r) => r.suites?.typing).suites.typing;
    out.push('', `(c) typing: /infill, ${t.file_tokens ?? '?'}-token file (${t.file_chars} chars), cursor at char ${t.prefix_chars} ` +
      `(${t.prefix_tokens ?? '?'} tokens before it), ${t.steps} requests typing ${t.typed_chars} chars, n_predict ${t.n_predict}`);
    out.push(table(['server', 'TTFT median ms', 'TTFT P95 ms', 'total median ms', 'evaluated/req (median)', 'cached/req (median)', 'cold TTFT ms', 'median ratio', 'P95 ratio'], typingRows));
  }
  out.push('', 'Ratios: hearth (or the row) / the baseline row (' + (runs.filter((r) => r.baseline).map((r) => r.label).join(', ') || '–') +
    '). TTFT: lower is better; t/s: higher is better.');
  return out.join('\n');
}

// ---- main ----------------------------------------------------------------------------------

const isMain = process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href;
const args = isMain ? parseArgs(process.argv.slice(2)) : { _: [] };
const cmd = isMain ? args._[0] : undefined;
if (cmd === 'run') {
  run(args).catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
} else if (cmd === 'report') {
  process.stdout.write(report(JSON.parse(readFileSync(args._[1], 'utf8'))) + '\n');
} else if (cmd === 'typing-file') {
  process.stdout.write(typingSession({ chars: Number(args['typing-chars'] ?? 7600) }).file);
} else if (isMain) {
  console.error('usage: server_bench.mjs run|report|typing-file ... (see the top of this file)');
  process.exit(2);
}
