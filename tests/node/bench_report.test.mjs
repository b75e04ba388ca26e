// `hearth bench` end to end against two fake providers with injected latencies:
//   A: 50 ms to first byte, 200 tokens/s; B: 400 ms to first byte, 1000 tokens/s.
// Total time is TTFT + n / rate, so B overtakes A above n* = (0.4 - 0.05) / (1/200 - 1/1000)
// = 87.5 output tokens. The reported TTFTs and crossover must match, --calibrate must write it
// into a policy file (only that line changes), and the HTML report must render in headless
// Chromium with its charts (skipped with a message when /usr/bin/chromium is absent).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, httpRequest, makeTempDir, runHearth } from './helpers.mjs';

const CHROMIUM = '/usr/bin/chromium';
const FAKE = path.join(REPO_ROOT, 'tests', 'fake_cloud', 'server.mjs');
const fakes = [];

async function startFake() {
  const proc = spawn(process.execPath, [FAKE, '--port', '0', '--watch-stdin'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)).port);
    });
    proc.once('exit', (code) => reject(new Error(`fake provider exited (${code})`)));
  });
  const fake = { proc, url: `http://127.0.0.1:${port}` };
  fake.control = async (settings) => {
    const r = await httpRequest(port, { method: 'POST', path: '/_control', body: settings });
    assert.equal(r.status, 200);
  };
  fakes.push(fake);
  return fake;
}

let A, B, dir, report, html, policyBefore, policyAfter, bench;

before(async () => {
  [A, B] = await Promise.all([startFake(), startFake()]);
  // 4 characters per token: the echoed prompts give 45 to 140 output tokens, around n*.
  await A.control({ latency_ms: 50, tokens_per_second: 200, chunk_chars: 4 });
  await B.control({ latency_ms: 400, tokens_per_second: 1000, chunk_chars: 4 });
  dir = makeTempDir();
  const policy = path.join(dir, 'hearth.yaml');
  policyBefore = readFileSync(path.join(REPO_ROOT, 'examples', 'hearth.yaml'), 'utf8');
  writeFileSync(policy, policyBefore);
  const json = path.join(dir, 'bench.json');
  html = path.join(dir, 'bench.html');
  bench = runHearth([
    'bench', '--endpoint', `a=${A.url}`, '--api', 'openai', '--endpoint', `b=${B.url}`, '--api', 'openai',
    '--runs', '20', '--warmup', '1', '--categories', 'function,refactor', '--concurrency', '1',
    '--json', json, '--html', html, '--calibrate', '--policy', policy,
  ], { timeoutMs: 180000 });
  assert.equal(bench.status, 0, `hearth bench failed (${bench.status}):\n${bench.stdout}\n${bench.stderr}`);
  report = JSON.parse(readFileSync(json, 'utf8'));
  policyAfter = readFileSync(policy, 'utf8');
});

after(() => {
  for (const f of fakes) f.proc.kill();
});

const cell = (endpoint, category) => report.results.find((r) => r.endpoint === endpoint && r.category === category);

test('every request succeeded and the table was printed', () => {
  assert.equal(report.samples.length, 2 * 2 * 20);
  for (const r of report.results) {
    assert.equal(r.ok, 20, JSON.stringify(r));
    assert.deepEqual(r.failures, {});
  }
  assert.match(bench.stdout, /TTFT ms min\/med\/p95\/max/);
  assert.match(bench.stdout, /crossover:\n\s+a vs b: b overtakes a above [\d.]+ output tokens/);
});

test('TTFT matches the injected latency', () => {
  for (const category of ['function', 'refactor']) {
    const a = cell('a', category).ttft_ms, b = cell('b', category).ttft_ms;
    assert.ok(a.median >= 48 && a.median <= 50 * 1.2 + 15, `a ${category} TTFT median ${a.median}`);
    assert.ok(b.median >= 398 && b.median <= 400 * 1.1 + 15, `b ${category} TTFT median ${b.median}`);
    assert.ok(a.min <= a.median && a.median <= a.p95 && a.p95 <= a.max);
  }
  // The fit's intercept estimates TTFT too (minus about one token's time).
  const fa = report.fits.find((f) => f.endpoint === 'a'), fb = report.fits.find((f) => f.endpoint === 'b');
  assert.ok(Math.abs(fa.ttft_ms - 45) < 20, `a intercept ${fa.ttft_ms}`);
  assert.ok(Math.abs(fb.ttft_ms - 399) < 30, `b intercept ${fb.ttft_ms}`);
  assert.ok(Math.abs(fa.tokens_per_s - 200) / 200 < 0.2, `a rate ${fa.tokens_per_s}`);
  assert.ok(fb.tokens_per_s > fa.tokens_per_s * 2.5, `b rate ${fb.tokens_per_s}`);
});

test('the crossover matches n* = 87.5 tokens within 10%, with a bootstrap interval around it', () => {
  assert.equal(report.crossovers.length, 1);
  const c = report.crossovers[0];
  assert.equal(c.faster_short, 'a');
  assert.equal(c.faster_long, 'b');
  assert.ok(Math.abs(c.tokens - 87.5) / 87.5 < 0.1, `crossover ${c.tokens}`);
  assert.ok(c.bootstrap.crossed > 0.9 * c.bootstrap.resamples);
  assert.ok(c.bootstrap.lo <= c.bootstrap.median && c.bootstrap.median <= c.bootstrap.hi);
  assert.ok(c.bootstrap.lo <= c.tokens * 1.05 && c.bootstrap.hi >= c.tokens * 0.95, JSON.stringify(c.bootstrap));
});

test('--calibrate rewrote only the crossover_tokens line', () => {
  const m = /crossover_tokens 250 -> (\d+)/.exec(bench.stdout);
  assert.ok(m, bench.stdout);
  const value = Number(m[1]);
  assert.ok(Math.abs(value - 87.5) / 87.5 < 0.1, `calibrated ${value}`);
  assert.equal(policyAfter, policyBefore.replace(/^crossover_tokens: 250$/m, `crossover_tokens: ${value}`));
  assert.notEqual(policyAfter, policyBefore);
});

test('failures are counted by kind and the failure threshold aborts a run', () => {
  const d = makeTempDir();
  // Nothing listens on port 1: every request is a connect failure, so the run stops after 10.
  const r = runHearth(['bench', '--endpoint', 'dead=http://127.0.0.1:1', '--api', 'ollama', '--runs', '50', '--warmup', '0',
    '--categories', 'function', '--failure-threshold', '0.2', '--json', path.join(d, 'dead.json')], { timeoutMs: 60000 });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /benchmark aborted: \d+ of \d+ requests failed/);
  const dead = JSON.parse(readFileSync(path.join(d, 'dead.json'), 'utf8'));
  assert.equal(dead.aborted, true);
  assert.ok(dead.results[0].failures.connect >= 10, JSON.stringify(dead.results[0]));
  assert.ok(dead.samples.length < 50);
});

test('HTTP errors are reported with their status', async () => {
  await A.control({ latency_ms: 0, tokens_per_second: 0, fail_next: [503, 429] });
  const d = makeTempDir();
  const r = runHearth(['bench', '--endpoint', `a=${A.url}`, '--api', 'openai', '--runs', '4', '--warmup', '0',
    '--categories', 'explain', '--json', path.join(d, 'e.json'), '-q'], { timeoutMs: 60000 });
  assert.equal(r.status, 0, r.stderr);
  const e = JSON.parse(readFileSync(path.join(d, 'e.json'), 'utf8'));
  assert.deepEqual(e.results[0].failures, { 'http 503': 1, 'http 429': 1 });
  assert.equal(e.results[0].ok, 2);
});

test('the HTML report renders in headless Chromium with its charts', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} not found (apt-get install chromium)` }, async () => {
  const text = readFileSync(html, 'utf8');
  assert.doesNotMatch(text, /<script[^>]+src=|<link[^>]+href=|<img|@import/i, 'the report must load nothing');
  const { chromium } = await import('playwright-core');
  const profile = makeTempDir();
  // A fresh profile: playwright passes it as --user-data-dir.
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto('file://' + html);
    await page.waitForSelector('body[data-rendered="true"]', { timeout: 10000 });
    assert.deepEqual(errors, []);
    const shot = path.join(makeTempDir(), 'bench-report.png');
    if (process.env.HEARTH_BENCH_SCREENSHOT) await page.screenshot({ path: process.env.HEARTH_BENCH_SCREENSHOT, fullPage: true });
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(readFileSync(shot).length > 10000, 'screenshot is not empty');
    const counts = await page.evaluate(() => ({
      svgs: document.querySelectorAll('svg').length,
      ids: ['chart-ttft', 'chart-total', 'chart-scatter', 'chart-fit'].filter((id) => document.getElementById(id)?.tagName === 'svg'),
      boxes: document.querySelectorAll('#chart-ttft g.box').length,
      totalBoxes: document.querySelectorAll('#chart-total g.box').length,
      scatterPoints: document.querySelectorAll('#chart-scatter circle').length,
      fitPoints: document.querySelectorAll('#chart-fit circle').length,
      fitLines: document.querySelectorAll('#chart-fit line.fit-line').length,
      crossover: document.querySelectorAll('#chart-fit line.crossover').length,
      summaryRows: document.querySelectorAll('#summary tr').length,
      fitWidth: document.getElementById('chart-fit').getBoundingClientRect().width,
    }));
    assert.equal(counts.svgs, 4);
    assert.deepEqual(counts.ids, ['chart-ttft', 'chart-total', 'chart-scatter', 'chart-fit']);
    assert.equal(counts.boxes, 4);  // 2 endpoints x 2 categories
    assert.equal(counts.totalBoxes, 4);
    assert.equal(counts.scatterPoints, 80);
    assert.equal(counts.fitPoints, 80);
    assert.equal(counts.fitLines, 2);
    assert.equal(counts.crossover, 1);
    assert.equal(counts.summaryRows, 5);
    assert.ok(counts.fitWidth > 500);
  } finally {
    await browser.close();
  }
});
