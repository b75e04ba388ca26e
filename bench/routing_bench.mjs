#!/usr/bin/env node
// Privacy-gateway routing overhead: what hearth adds to a request it proxies to a cloud backend.
// node >= 20, no dependencies.
//
//   node bench/routing_bench.mjs [--hearth build-sbench/src/hearth] [--n 500] [--warmup 20]
//        [--modes disk,shm] [--harness native|node] [--fake-writes two] [--stream-tps 0]
//        [--model ../shared/models/stories260K.gguf] [--out FILE.json] [--raw]
//
// It starts a fake OpenAI provider (latency 0: it answers at once) and, per mode, `hearth serve`
// with a policy whose only rule sends every request to it:
//   rules: [{name: all-to-fake, when: {}, action: cloud, backend: fake}]
//   egress: {allow: ["127.0.0.1:<port>"]}, backend fake: type openai, api_key_env set
// and a small local model (stories260K, or `hearth dev gen-model --shape tiny` when it is
// missing) that is never used. Then N non-streaming chat requests through hearth and N
// directly to the fake provider with the same body, alternating (hearth, direct, hearth, ...),
// sequentially, each target on its own keep-alive connection; then the same with stream: true,
// where the figure is the time to the first non-empty content delta (TTFT).
// The body is a ~2 KB user message (code plus prose) with one planted AWS access key, so the
// scanner finds it, the redactor replaces it with a placeholder before sending, and the
// restorer puts it back into the echoed answer (the fake answers "ECHO: " + the message).
//
// Harnesses (the client and the fake provider; hearth is the same binary in both):
//   native  (default) bench/routing_harness.cpp, built as hearth_bench_routing next to hearth's
//           build (<build>/bench/): a C++ fake provider and a C++ client (Boost.Beast). Node
//           only orchestrates and waits while it measures.
//   node    tests/fake_cloud/server.mjs and a node:http client in this process. On a 2-vCPU
//           machine their garbage collectors' helper threads preempt hearth for milliseconds
//           (docs/performance.md), which then sets the P99 more than hearth does.
//
// --fake-writes (native harness) is how the fake sends a stream (see bench/routing_harness.cpp):
//   two        (default) every event built first, then the headers with the role chunk and the
//              first token in one write, and the rest of the stream in a second write. The fake
//              stands in for a provider on another machine, so it should cost this one as
//              little CPU as possible while the first token travels.
//   per-event  each event built and written on its own, back to back: ~0.9 ms of the fake's
//              CPU (67 JSON events, 67 writes, 67 wake-ups of the reader) right when hearth
//              relays the first token. On 2 vCPUs the client then waits in the run queue
//              behind the fake (docs/performance.md, "Sixth session"): a stress case.
//   one        the headers, then every event in one write.
// --stream-tps N paces the fake's per-event writes at N tokens per second (0, the default: no
// pauses; cloud APIs stream tens to a few hundred tokens per second; on this VM pauses of a
// millisecond or more let the vCPUs halt, and waking them then sets the tail).
// --raw keeps every sample (per request, in order) in the JSON.
// Modes (where the audit log lives and how durable it is; hearth writes a write-ahead note
// before the request leaves and appends one record after it, both SQLite WAL transactions):
//   disk   --audit-db in a fresh directory under os.tmpdir() (or --audit-dir DIR), the default
//          audit_sync: normal (no fsync on the request path)
//   full   like disk, with audit_sync: full (synchronous=FULL: an fsync per transaction)
//   shm    --audit-db under /dev/shm (tmpfs), to isolate the disk
//   clean  like shm, and a message without the planted secret (nothing to redact)
// The audit records carry hearth's own latency_ms (routing decision + redaction + the backend
// call + restoring; not HTTP parsing/serialisation, not the audit append itself): exported with
// `hearth audit export` they split the overhead into "inside the router" and "outside".
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { quantile, mean } from './server_bench.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '..');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue;
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) out[argv[i].slice(2)] = true;
    else { out[argv[i].slice(2)] = next; i++; }
  }
  return out;
}
const args = parseArgs(process.argv.slice(2));
const N = Number(args.n ?? 500);
const WARMUP = Number(args.warmup ?? 20);
const MAX_TOKENS = Number(args['max-tokens'] ?? 64);  // the fake's reply: MAX_TOKENS events of 3 characters
const MODES = String(args.modes ?? 'disk,shm').split(',').filter(Boolean);
const HEARTH = args.hearth ?? process.env.HEARTH_BIN ?? path.join(ROOT, 'build-sbench/src/hearth');
const HARNESS = String(args.harness ?? 'native');
const STREAM_TPS = Number(args['stream-tps'] ?? 0);
const FAKE_WRITES = String(args['fake-writes'] ?? (STREAM_TPS > 0 ? 'per-event' : 'two'));
if (!['two', 'per-event', 'one'].includes(FAKE_WRITES)) {
  console.error(`--fake-writes must be two, per-event or one (got '${FAKE_WRITES}')`);
  process.exit(2);
}
if (STREAM_TPS > 0 && FAKE_WRITES !== 'per-event') {
  console.error('--stream-tps paces per-event writes only: pass --fake-writes per-event with it');
  process.exit(2);
}
const NATIVE = args['harness-bin'] ?? path.join(path.dirname(HEARTH), '..', 'bench', 'hearth_bench_routing');
const FAKE_KEY = 'bench-fake-key-0123456789';
const SECRET = 'AKIAIOSFODNN7EXAMPLE';

if (!existsSync(HEARTH)) {
  console.error(`hearth binary not found at ${HEARTH}: build it (bench/run-server-bench.sh does) or pass --hearth`);
  process.exit(2);
}
for (const m of MODES) {
  if (!['disk', 'full', 'shm', 'clean'].includes(m)) {
    console.error(`unknown mode '${m}': use disk, full, shm or clean`);
    process.exit(2);
  }
}
if (HARNESS !== 'native' && HARNESS !== 'node') {
  console.error(`--harness must be native or node, not '${HARNESS}'`);
  process.exit(2);
}
if (HARNESS === 'native' && !existsSync(NATIVE)) {
  console.error(`native harness not found at ${NATIVE}: build the hearth_bench_routing target, pass --harness-bin, or use --harness node`);
  process.exit(2);
}

const children = new Set();
const tempDirs = [];
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
for (const s of ['SIGINT', 'SIGTERM']) process.once(s, () => process.exit(130));

function tempDir(base) {
  const d = mkdtempSync(path.join(base, 'hearth-routing-'));
  tempDirs.push(d);
  return d;
}

// ---- the request body ----------------------------------------------------------------------

function message(withSecret) {
  // The key sits in the first line so that the (max_tokens-truncated) echo still contains its
  // placeholder and hearth's restorer has something to put back.
  const code = [
    `AWS_ACCESS_KEY_ID = "${withSecret ? SECRET : 'read-from-the-environment'}"`,
    'import boto3',
    'import json',
    '',
    'def upload_report(bucket: str, key: str, report: dict) -> None:',
    '    """Serialise the report and store it in S3 under the given key."""',
    '    session = boto3.session.Session(',
    '        aws_access_key_id=AWS_ACCESS_KEY_ID,',
    '        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],',
    '        region_name="eu-west-1",',
    '    )',
    '    client = session.client("s3")',
    '    body = json.dumps(report, indent=2, sort_keys=True).encode("utf-8")',
    '    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")',
    '',
  ].join('\n');
  let text = code + '\nExplain what this deployment helper does, point out anything that looks risky, ' +
    'and suggest how to restructure it so that credentials are not kept in the source file.\n\n';
  const filler = 'The report is produced nightly by the batch job, uploaded to the reporting bucket, ' +
    'and read by the dashboard service, which caches it for an hour before fetching it again. ';
  while (text.length < 2048) text += filler;
  return text.slice(0, 2048);
}

const body = (withSecret, stream) => JSON.stringify({
  model: 'stories260K', stream, max_tokens: MAX_TOKENS, temperature: 0,
  messages: [{ role: 'user', content: message(withSecret) }],
});

// ---- processes -----------------------------------------------------------------------------

async function startFake() {
  const proc = HARNESS === 'native'
    ? spawn(NATIVE, ['fake', '--marker', SECRET, '--tokens-per-second', String(STREAM_TPS), '--writes', FAKE_WRITES],
      { stdio: ['pipe', 'pipe', 'inherit'] })
    : spawn(process.execPath, [path.join(ROOT, 'tests/fake_cloud/server.mjs'), '--watch-stdin'],
      { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(proc);
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)).port);
    });
    proc.once('exit', (code) => reject(new Error(`fake provider exited ${code}`)));
  });
  return { proc, port };
}

function localModel() {
  const stories = args.model ?? path.resolve(ROOT, '..', 'shared', 'models', 'stories260K.gguf');
  if (existsSync(stories)) return stories;
  const out = path.join(tempDir(os.tmpdir()), 'tiny.gguf');
  const r = spawnSync(HEARTH, ['dev', 'gen-model', '--shape', 'tiny', '--out', out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error('hearth dev gen-model failed: ' + r.stderr);
  return out;
}

function policy(port, auditSync = 'normal') {
  return `version: 1
audit_sync: ${auditSync}
egress:
  allow: ["127.0.0.1:${port}"]
backends:
  - name: fake
    type: openai
    url: http://127.0.0.1:${port}/v1
    model: fake-gpt
    api_key_env: HEARTH_BENCH_FAKE_KEY
rules:
  - name: all-to-fake
    when: {}
    action: cloud
    backend: fake
default: local
`;
}

async function startHearth(argv) {
  const proc = spawn(HEARTH, ['serve', '--port', '0', ...argv], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, HEARTH_HOST: '', HEARTH_API_KEY: '', HEARTH_POLICY: '', HEARTH_BENCH_FAKE_KEY: FAKE_KEY },
  });
  children.add(proc);
  let log = '';
  proc.stderr.setEncoding('utf8');
  const port = await new Promise((resolve, reject) => {
    proc.stderr.on('data', (d) => {
      log += d;
      const m = /hearth: listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`hearth serve exited ${code}:\n${log}`)));
  });
  return {
    proc, port, log: () => log,
    stop: () => new Promise((resolve) => {
      proc.once('exit', () => { children.delete(proc); resolve(); });
      proc.kill('SIGTERM');
    }),
  };
}

// ---- the client: node:http on one keep-alive connection per target ------------------------

function post(agent, port, urlPath, payload, { stream }) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let ttft = null;
    let buf = '';
    let text = '';
    const req = http.request({
      host: '127.0.0.1', port, path: urlPath, method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), authorization: `Bearer ${FAKE_KEY}` },
    }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (d) => {
        if (!stream) { text += d; return; }
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
          const j = JSON.parse(ev.slice(6));
          const c = j.choices?.[0]?.delta?.content;
          if (c) {
            if (ttft === null) ttft = performance.now() - t0;
            text += c;
          }
        }
      });
      res.on('end', () => {
        const total = performance.now() - t0;
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode} from :${port}${urlPath}: ${text.slice(0, 300)}`));
        if (!stream) text = JSON.parse(text).choices[0].message.content;
        resolve({ total, ttft, text, route: res.headers['x-hearth-route'] ?? null });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

const stats = (v) => ({
  n: v.length, p50: +quantile(v, 0.5).toFixed(3), p95: +quantile(v, 0.95).toFixed(3), p99: +quantile(v, 0.99).toFixed(3),
  mean: +mean(v).toFixed(3), max: +Math.max(...v).toFixed(3),
});

// Alternating hearth and direct requests with the same body, through the node client.
async function sampleNode(hearthPort, fakePort, withSecret, stream) {
  const agents = [0, 1].map(() => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  const payload = body(withSecret, stream);
  const hearthMs = [], directMs = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const h = await post(agents[0], hearthPort, '/v1/chat/completions', payload, { stream });
    const d = await post(agents[1], fakePort, '/v1/chat/completions', payload, { stream });
    if (h.route !== 'cloud' && !stream) throw new Error(`hearth served the request '${h.route}', not 'cloud'`);
    if (withSecret && !h.text.includes(SECRET)) throw new Error('the planted secret was not restored in the answer: ' + h.text.slice(0, 200));
    if (i < WARMUP) continue;
    hearthMs.push(stream ? h.ttft : h.total);
    directMs.push(stream ? d.ttft : d.total);
  }
  for (const a of agents) a.destroy();
  return { hearthMs, directMs };
}

// The same through the native client (a child process); this process only waits for it.
async function sampleNative(hearthPort, fakePort, withSecret, stream) {
  const bodyFile = path.join(tempDir(os.tmpdir()), 'body.json');
  writeFileSync(bodyFile, body(withSecret, stream));
  const argv = ['client', '--hearth-port', String(hearthPort), '--direct-port', String(fakePort), '--body-file', bodyFile,
    '--n', String(N), '--warmup', String(WARMUP), '--key', FAKE_KEY, ...(stream ? ['--stream'] : []),
    ...(withSecret ? ['--expect', SECRET] : [])];
  const proc = spawn(NATIVE, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(proc);
  let out = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => { out += d; });
  const code = await new Promise((resolve) => proc.once('exit', resolve));
  children.delete(proc);
  if (code !== 0) throw new Error(`${NATIVE} client exited ${code}`);
  const r = JSON.parse(out);
  return { hearthMs: r.hearth_ms, directMs: r.direct_ms };
}

// Returns the latency statistics of hearth against direct, and the paired differences.
async function measure(hearthPort, fakePort, withSecret, stream) {
  const sample = HARNESS === 'native' ? sampleNative : sampleNode;
  const { hearthMs, directMs } = await sample(hearthPort, fakePort, withSecret, stream);
  const hs = stats(hearthMs), ds = stats(directMs);
  const out = {
    metric: stream ? 'ttft_ms' : 'total_ms', payload_bytes: Buffer.byteLength(body(withSecret, stream)),
    hearth: hs, direct: ds,
    overhead: { p50: +(hs.p50 - ds.p50).toFixed(3), p95: +(hs.p95 - ds.p95).toFixed(3), p99: +(hs.p99 - ds.p99).toFixed(3), mean: +(hs.mean - ds.mean).toFixed(3) },
    paired_difference: stats(hearthMs.map((x, i) => x - directMs[i])),
  };
  if (args.raw) out.raw = { hearth_ms: hearthMs, direct_ms: directMs };
  return out;
}

// How many requests from hearth reached the fake with the planted secret in them.
async function leakedRequests(fakePort) {
  if (HARNESS === 'native') return (await getJson(fakePort, '/_stats')).marker_from_hearth;
  const received = await getJson(fakePort, '/_received');
  return received.filter((r) => r.body.includes(SECRET) && r.headers['user-agent'] === 'hearth').length;
}

function auditLatencies(db) {
  const r = spawnSync(HEARTH, ['audit', 'export', '--db', db], { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error('hearth audit export failed: ' + r.stderr);
  const recs = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  return recs;
}

// ---- main ----------------------------------------------------------------------------------

async function main() {
  const fake = await startFake();
  if (HARNESS === 'node' && STREAM_TPS > 0) {
    await fetch(`http://127.0.0.1:${fake.port}/_control`, { method: 'POST', body: JSON.stringify({ tokens_per_second: STREAM_TPS }) });
  }
  const model = localModel();
  const dir = tempDir(os.tmpdir());
  const policyPath = path.join(dir, 'hearth.yaml');
  writeFileSync(policyPath, policy(fake.port));
  const fullPolicyPath = path.join(dir, 'hearth-full.yaml');
  writeFileSync(fullPolicyPath, policy(fake.port, 'full'));
  const result = {
    date: new Date().toISOString(), harness: HARNESS, stream_tps: STREAM_TPS, fake_writes: HARNESS === 'native' ? FAKE_WRITES : 'per-event', n: N, warmup: WARMUP, max_tokens: MAX_TOKENS, hearth: HEARTH, model, cpu: os.cpus()[0]?.model, nproc: os.cpus().length,
    load_before: os.loadavg().map((x) => +x.toFixed(2)), policy: policy('PORT'), modes: {},
  };
  const gitRev = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const dirty = spawnSync('git', ['-C', ROOT, 'diff', '--quiet', 'HEAD']).status !== 0;
  result.hearth_commit = gitRev + (dirty ? '+dirty' : '');
  for (const mode of MODES) {
    const onDisk = mode === 'disk' || mode === 'full';
    const base = onDisk ? (args['audit-dir'] ?? os.tmpdir()) : '/dev/shm';
    const auditDir = tempDir(base);
    const auditDb = path.join(auditDir, 'audit.db');
    const argv = ['--model', `stories260K=${model}`, '--policy', mode === 'full' ? fullPolicyPath : policyPath, '--audit-db', auditDb, '--parallel', '1', '--threads', '1'];
    const hearth = await startHearth(argv);
    const withSecret = mode !== 'clean';
    process.stderr.write(`== ${mode}: hearth serve ${argv.join(' ')} (audit log on ${base})\n`);
    const leakedBefore = await leakedRequests(fake.port);
    const nonStream = await measure(hearth.port, fake.port, withSecret, false);
    process.stderr.write(`   non-streaming: hearth P50 ${nonStream.hearth.p50} P99 ${nonStream.hearth.p99} ms, direct P50 ${nonStream.direct.p50} P99 ${nonStream.direct.p99} ms\n`);
    // What hearth sent: the secret must not have left.
    const streamed = await measure(hearth.port, fake.port, withSecret, true);
    const leaked = (await leakedRequests(fake.port)) - leakedBefore;
    process.stderr.write(`   streaming TTFT: hearth P50 ${streamed.hearth.p50} P99 ${streamed.hearth.p99} ms, direct P50 ${streamed.direct.p50} P99 ${streamed.direct.p99} ms\n`);
    await hearth.stop();
    const recs = auditLatencies(auditDb);
    // The non-streaming records are the first WARMUP+N; hearth's latency_ms is measured inside the router.
    const ns = recs.slice(WARMUP, WARMUP + N).map((r) => r.latency_ms);
    const routerMs = stats(ns);
    result.modes[mode] = {
      audit_db: auditDb, secret: withSecret, secret_leaked_requests: leaked, audit_records: recs.length,
      findings_example: recs[0]?.findings, redactions_example: recs[0]?.redactions,
      non_streaming: nonStream, streaming: streamed,
      router_latency_ms_non_streaming: routerMs,
      outside_router_ms: {  // client-observed hearth latency minus the router's own latency_ms
        p50: +(nonStream.hearth.p50 - routerMs.p50).toFixed(3), p99: +(nonStream.hearth.p99 - routerMs.p99).toFixed(3),
        mean: +(nonStream.hearth.mean - routerMs.mean).toFixed(3),
      },
    };
  }
  result.load_after = os.loadavg().map((x) => +x.toFixed(2));
  fake.proc.kill();
  printReport(result);
  if (args.out) {
    writeFileSync(args.out, JSON.stringify(result, null, 1) + '\n');
    process.stderr.write(`wrote ${args.out}\n`);
  }
  const leaks = Object.entries(result.modes).filter(([, m]) => m.secret_leaked_requests > 0);
  if (leaks.length > 0) {  // figures for a gateway that leaked are not figures
    console.error(`FAILED: the planted secret reached the provider (${leaks.map(([k, m]) => `${k}: ${m.secret_leaked_requests} requests`).join(', ')})`);
    process.exitCode = 1;
  }
}

const getJson = (port, p) => new Promise((resolve, reject) => {
  http.get({ host: '127.0.0.1', port, path: p }, (res) => {
    let t = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { t += d; });
    res.on('end', () => resolve(JSON.parse(t)));
  }).on('error', reject);
});

function printReport(r) {
  const f = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–');
  const lines = [];
  lines.push(`routing overhead: N=${r.n} (+${r.warmup} warmup) sequential requests each way, alternating, ${r.harness} harness, streamed tokens ${r.stream_tps > 0 ? r.stream_tps + '/s' : 'all at once'}, fake writes ${r.fake_writes}; ${r.cpu}; hearth ${r.hearth_commit}; load ${r.load_before.join(' ')} -> ${r.load_after.join(' ')}`);
  lines.push('');
  lines.push('| audit log | request | direct P50 | P95 | P99 | via hearth P50 | P95 | P99 | overhead P50 | P95 | P99 | paired diff P50 | P99 |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const [mode, m] of Object.entries(r.modes)) {
    const label = `${mode}${m.secret ? '' : ' (no secret)'}`;
    const row = (kind, b, o, p, h) => lines.push(`| ${label} | ${kind} | ${f(b.p50)} | ${f(b.p95)} | ${f(b.p99)} | ` +
      `${f(h.p50)} | ${f(h.p95)} | ${f(h.p99)} | ${f(o.p50)} | ${f(o.p95)} | ${f(o.p99)} | ${f(p.p50)} | ${f(p.p99)} |`);
    const x = m.non_streaming, y = m.streaming;
    row('non-streaming, total', x.direct, x.overhead, x.paired_difference, x.hearth);
    row('streaming, TTFT', y.direct, y.overhead, y.paired_difference, y.hearth);
  }
  lines.push('');
  lines.push('| audit log | router latency_ms P50 | P99 | client-observed minus router P50 | P99 |');
  lines.push('|---|---|---|---|---|');
  for (const [mode, m] of Object.entries(r.modes)) {
    lines.push(`| ${mode} | ${f(m.router_latency_ms_non_streaming.p50)} | ${f(m.router_latency_ms_non_streaming.p99)} | ${f(m.outside_router_ms.p50)} | ${f(m.outside_router_ms.p99)} |`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
