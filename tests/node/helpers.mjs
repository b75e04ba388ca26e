// Shared helpers for the node client tests: find the hearth binary, generate the tiny
// FIM model into a temp dir, start `hearth serve` on a free port and stop it afterwards.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..');

// The binary: HEARTH_BIN (set by CTest), else a build directory next to the sources.
export const HEARTH_BIN = (() => {
  if (process.env.HEARTH_BIN) return process.env.HEARTH_BIN;
  // Else the newest build/*/src/hearth next to the sources.
  const found = readdirSync(REPO_ROOT)
    .filter((d) => d.startsWith('build'))
    .map((d) => path.join(REPO_ROOT, d, 'src', 'hearth'))
    .filter((f) => existsSync(f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (found.length) return found[0];
  throw new Error('hearth binary not found: set HEARTH_BIN=/path/to/hearth (or build into build/)');
})();

// The real trained model (optional): tests that need it skip when it is absent.
export const STORIES_MODEL = process.env.HEARTH_STORIES_MODEL ||
  path.resolve(REPO_ROOT, '..', 'shared', 'models', 'stories260K.gguf');
export const HAVE_STORIES = existsSync(STORIES_MODEL);
export const SKIP_STORIES = HAVE_STORIES ? false : `stories260K.gguf not found at ${STORIES_MODEL}`;
// Greedy continuation of the raw prompt "Once upon a time" by stories260K.
export const STORIES_PROMPT = 'Once upon a time';
export const STORIES_GOLDEN = ', there was a little girl named Lily.';

const tempDirs = [];
const children = new Set();  // running `hearth serve` processes
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});
// A runner killed on timeout must not leave servers behind.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)));
}

export function makeTempDir() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'hearth-node-'));
  tempDirs.push(dir);
  return dir;
}

// Runs hearth synchronously; returns {status, stdout, stderr}.
export function runHearth(args, { timeoutMs = 30000, env = {} } = {}) {
  const r = spawnSync(HEARTH_BIN, args, {
    encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, ...env },
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

let tinyModelPath = null;
// A tiny random-weight qwen2 model with the starcoder vocabulary (it has FIM tokens).
export function tinyModel() {
  if (tinyModelPath) return tinyModelPath;
  const out = path.join(makeTempDir(), 'fim.gguf');
  const r = runHearth(['dev', 'gen-model', '--shape', 'tiny', '--vocab', 'starcoder', '--out', out]);
  if (r.status !== 0) throw new Error(`hearth dev gen-model failed (${r.status}): ${r.stderr}`);
  tinyModelPath = out;
  return out;
}

// Starts `hearth serve --port 0 ...` and waits for its listening line.
// models: ['NAME=FILE', ...]; args: extra flags. Resolves to a server handle:
//   { url, port, host, proc, log(), stop() }
export async function startServer({ models = [], args = [], env = {}, timeoutMs = 30000 } = {}) {
  const argv = ['serve', '--port', '0'];
  for (const m of models) argv.push('--model', m);
  argv.push(...args);
  const proc = spawn(HEARTH_BIN, argv, {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HEARTH_HOST: '', HEARTH_API_KEY: '', ...env },
  });
  children.add(proc);
  let stderr = '';
  let stdout = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (d) => { stdout += d; });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => {
    children.delete(proc);
    resolve({ code, signal });
  }));

  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`hearth serve did not report listening within ${timeoutMs} ms:\n${stderr}`));
    }, timeoutMs);
    const onData = (d) => {
      stderr += d;
      const m = /hearth: listening on http:\/\/(\S+):(\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[2]));
      }
    };
    proc.stderr.on('data', onData);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`hearth serve exited (${code ?? signal}) before listening:\n${stderr}`));
    });
  });

  const server = {
    port,
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    proc,
    exited,
    log: () => stdout + stderr,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const r = await exited;
      clearTimeout(timer);
      return r;
    },
  };
  return server;
}

// JSON POST/GET with fetch; returns {status, headers, body (parsed when JSON), text}.
export async function request(url, { method, body, headers = {}, raw = false, signal } = {}) {
  const init = { method: method || (body === undefined ? 'GET' : 'POST'), headers: { ...headers }, signal };
  if (body !== undefined) {
    init.body = raw ? body : JSON.stringify(body);
    if (!Object.keys(init.headers).some((h) => h.toLowerCase() === 'content-type')) {
      init.headers['Content-Type'] = 'application/json';
    }
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let parsed;
  try { parsed = JSON.parse(text); } catch { parsed = undefined; }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

export const postJson = (url, body, opts = {}) => request(url, { ...opts, body });

// The error message of an Ollama ({error: "..."}) or OpenAI/llama.cpp ({error: {message}}) body.
export function errorMessage(body) {
  if (!body || body.error === undefined) return '';
  return typeof body.error === 'string' ? body.error : String(body.error.message ?? '');
}

// Reads a fetch Response body as text chunks (async iterator of strings).
export async function* textChunks(res) {
  const decoder = new TextDecoder();
  for await (const chunk of res.body) yield decoder.decode(chunk, { stream: true });
}

// Splits an NDJSON body into lines, asserting none is partial.
export function ndjsonLines(text) {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

// Parses an SSE body into its events' data fields (strings).
export function sseEvents(text) {
  const events = text.split('\n\n');
  if (events[events.length - 1] === '') events.pop();
  return events;
}

// Sends raw bytes over a TCP socket and collects what comes back until the server closes
// the connection or `untilMs` passes. Resolves to the response text.
export function rawHttp(port, data, { untilMs = 5000, endAfterWrite = false } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => { socket.destroy(); resolve(got); }, untilMs);
    socket.setEncoding('latin1');
    socket.on('connect', () => {
      socket.write(data);
      if (endAfterWrite) socket.end();
    });
    socket.on('data', (d) => { got += d; });
    socket.on('end', () => { clearTimeout(timer); socket.destroy(); resolve(got); });
    socket.on('close', () => { clearTimeout(timer); resolve(got); });
    socket.on('error', (e) => { clearTimeout(timer); if (got) resolve(got); else reject(e); });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Unit-norm check helper.
export function l2norm(v) {
  return Math.sqrt(v.reduce((s, x) => s + x * x, 0));
}

// A request through node:http, which (unlike fetch) may set any header, Host included.
// Resolves to {status, headers (lower-case keys), text, body (parsed JSON or undefined)}.
export function httpRequest(port, { method = 'GET', path: reqPath = '/', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    const h = { ...headers };
    if (payload !== undefined) h['Content-Length'] = Buffer.byteLength(payload);
    const req = http.request({ host: '127.0.0.1', port, method, path: reqPath, headers: h, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let parsed;
        try { parsed = JSON.parse(text); } catch { parsed = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, body: parsed });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

// Proves the server still serves after a bad request: a tiny generation must succeed.
export async function assertServes(server, model = 'fim') {
  const r = await postJson(`${server.url}/api/generate`, {
    model, prompt: 'def', raw: true, stream: false, options: { num_predict: 2, temperature: 0 },
  });
  if (r.status !== 200 || r.body?.done !== true) {
    throw new Error(`follow-up request failed: ${r.status} ${r.text}`);
  }
}

// Server flags for the tiny FIM model (always) and stories260K (when present).
export function standardModels() {
  const models = [`fim=${tinyModel()}`];
  if (HAVE_STORIES) models.push(`stories=${STORIES_MODEL}`);
  return models;
}

// A JSON schema a random-weight model satisfies quickly (a closed enum).
export const COLOR_SCHEMA = {
  type: 'object',
  properties: { color: { type: 'string', enum: ['red', 'green', 'blue'] } },
  required: ['color'],
  additionalProperties: false,
};
