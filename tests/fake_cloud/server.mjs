// A fake cloud LLM provider for tests and benchmarks: node, no dependencies, 127.0.0.1 only.
//
//   node tests/fake_cloud/server.mjs [--port N] [--host 127.0.0.1] [--watch-stdin]
//
// The first line on stdout is `{"port": N}` (port 0, the default, picks a free port); nothing
// else is written to stdout. --watch-stdin: exit when stdin closes (a test spawns the server
// with a pipe, so the server dies with its parent even after a crash).
//
// Provider surfaces (any path prefix is accepted, e.g. /v1/chat/completions or /chat/completions):
//   POST .../chat/completions  OpenAI: `stream: true` → SSE `data: {chat.completion.chunk}` events
//                              (role chunk, content chunks, a finish chunk, a usage chunk when
//                              stream_options.include_usage, then `data: [DONE]`); otherwise one
//                              chat.completion JSON object.
//   POST .../messages          Anthropic: `stream: true` → SSE events message_start (usage.input_tokens),
//                              content_block_start, ping, content_block_delta (text_delta) ...,
//                              content_block_stop, message_delta (stop_reason, usage.output_tokens),
//                              message_stop; otherwise one message JSON object.
//   POST .../api/chat          Ollama: NDJSON lines {message:{content}, done:false} ..., then
//                              {done:true, done_reason, prompt_eval_count, eval_count} (or one object
//                              with `stream: false`).
// The reply is deterministic: "ECHO: " + the last user message (or `reply` when set), split into
// "tokens" of `chunk_chars` code points (default 3), one event per token. max_tokens (OpenAI,
// Anthropic) / options.num_predict (Ollama) truncate it to that many tokens with finish reason
// "length" / "max_tokens". A stop string (stop, stop_sequences, options.stop) truncates it before
// the stop string with reason "stop" / "stop_sequence". Usage: prompt tokens = ceil(characters of
// all message contents (and system) / 4); completion tokens = number of tokens sent.
//
// Control API (control requests are never recorded in /_received):
//   POST /_control {json}   merges these settings (all optional; POST /_reset restores defaults):
//     latency_ms          delay before the response headers (time to first byte), default 0
//     tokens_per_second   pace of streamed tokens; 0 (default) = as fast as possible
//     chunk_chars         code points per streamed token, default 3
//     fail_next           array, consumed one entry per provider request: a status number
//                         (e.g. [429, 500, 503]), "close" (destroy the socket without a response),
//                         or {status, retry_after, message, headers: {name: value}} (e.g.
//                         {status: 302, headers: {location: "http://elsewhere/"}}). Error bodies use
//                         the provider's shape: OpenAI {error:{message,type,code}}, Anthropic
//                         {type:"error", error:{type,message}}, Ollama {error}.
//     retry_after         Retry-After header value for failures from fail_next (number of seconds
//                         or an HTTP date string); null (default) = none
//     stall_after_bytes   after this many response body bytes, stop writing and hold the connection
//                         open until the client goes away; null (default) = never. 0 stalls right
//                         after the headers.
//     stall_requests      how many upcoming successful provider requests stall, default 1 (the
//                         count is consumed; a new stall_after_bytes resets it to 1 unless given)
//     fragment_bytes      write every event in pieces of this many bytes, 2 ms apart (to test
//                         clients against events split across reads); 0 (default) = whole events
//     burst               true: a stream's events all go out in one write at its end (after
//                         the headers), so a client reads them together; default false
//     reply               fixed reply text instead of the echo; null (default) = echo
//     require_key         when set, requests must carry `Authorization: Bearer <key>` or
//                         `x-api-key: <key>` equal to it, else 401 (the message quotes the key
//                         that was sent, as some providers do, to test that clients never echo it)
//     error_event         Anthropic/OpenAI/Ollama stream: after the first content token send a
//                         provider error event of this type (e.g. "overloaded_error") and end
//   GET|POST /_control      returns the current settings.
//   GET|POST /_received     returns [{seq, time_ms, method, path, headers, has_authorization,
//                           has_x_api_key, body, body_bytes, body_sha256, status}] for every
//                           provider request received, oldest first. `headers` omits authorization
//                           and x-api-key; `body` is the raw request body (utf8); `body_bytes` is
//                           its exact size in bytes; `status` is the status the fake answered
//                           (0 for "close").
//   POST /_reset            forgets received requests and restores the default settings.
// Per-request override: a request header `x-fake-control: {json}` merges those settings for that
// request only (fail_next excluded), e.g. for concurrent benchmark clients with different latencies.
// Unknown paths answer 404.

import http from 'node:http';
import crypto from 'node:crypto';

const args = process.argv.slice(2);
function argValue(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}
const HOST = argValue('--host', '127.0.0.1');
const PORT = Number(argValue('--port', '0'));

const DEFAULTS = {
  latency_ms: 0,
  tokens_per_second: 0,
  chunk_chars: 3,
  fail_next: [],
  retry_after: null,
  stall_after_bytes: null,
  stall_requests: 1,
  fragment_bytes: 0,
  burst: false,
  reply: null,
  require_key: null,
  error_event: null,
};

let settings = structuredClone(DEFAULTS);
let received = [];
let seq = 0;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function sendJson(res, status, obj, extraHeaders = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extraHeaders });
  res.end(body);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((b) => (b && typeof b.text === 'string' ? b.text : '')).join('');
  return '';
}

// A streamed response with the injectable pacing, fragmentation and stall behaviour.
class Stream {
  constructor(req, res, opts) {
    this.res = res;
    this.opts = opts;
    this.sent = 0;
    this.closed = false;
    this.stalled = false;
    res.on('close', () => { this.closed = true; });
    req.socket.setNoDelay(true);
    if (opts.burst) res.cork();  // every event of the stream in one write, at the end
  }
  // Writes one event (string); resolves false when the client went away or the stream stalled.
  async write(text) {
    if (this.closed || this.stalled) return false;
    let buf = Buffer.from(text, 'utf8');
    const stallAt = this.opts.stall_after_bytes;
    let stallNow = false;
    if (stallAt !== null && stallAt !== undefined && this.sent + buf.length >= stallAt) {
      buf = buf.subarray(0, Math.max(0, stallAt - this.sent));
      stallNow = true;
    }
    const frag = this.opts.fragment_bytes > 0 ? this.opts.fragment_bytes : buf.length;
    for (let off = 0; off < buf.length; off += frag) {
      if (this.closed) return false;
      this.res.write(buf.subarray(off, Math.min(buf.length, off + frag)));
      if (frag < buf.length) await sleep(2);
    }
    this.sent += buf.length;
    if (stallNow) {
      this.stalled = true;  // hold the connection open until the client gives up
      return false;
    }
    return !this.closed;
  }
  async pace() {
    const tps = this.opts.tokens_per_second;
    if (tps > 0) await sleep(1000 / tps);
  }
  end() {
    if (this.opts.burst) this.res.uncork();
    if (!this.closed && !this.stalled) this.res.end();
  }
}

function splitTokens(text, chunkChars) {
  const cps = Array.from(text);
  const n = Math.max(1, chunkChars | 0);
  const out = [];
  for (let i = 0; i < cps.length; i += n) out.push(cps.slice(i, i + n).join(''));
  return out;
}

// Computes the reply tokens and the finish reason ('stop' | 'length') for a request.
function planReply(opts, { lastUser, maxTokens, stops }) {
  let text = opts.reply !== null && opts.reply !== undefined ? String(opts.reply) : 'ECHO: ' + lastUser;
  let reason = 'stop';
  let stopHit = false;
  for (const s of stops || []) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0) { text = text.slice(0, i); stopHit = true; }
  }
  let tokens = splitTokens(text, opts.chunk_chars);
  if (text === '') tokens = [];
  if (Number.isInteger(maxTokens) && maxTokens >= 0 && tokens.length > maxTokens) {
    tokens = tokens.slice(0, maxTokens);
    reason = 'length';
  }
  return { tokens, reason, stopHit };
}

function promptTokens(parts) {
  const chars = parts.reduce((n, p) => n + Array.from(p || '').length, 0);
  return Math.ceil(chars / 4);
}

function errorBody(kind, status, message) {
  const type = status === 429 ? 'rate_limit_error' : status === 401 ? 'authentication_error'
    : status >= 500 ? (status === 529 || status === 503 ? 'overloaded_error' : 'api_error') : 'invalid_request_error';
  if (kind === 'anthropic') return { type: 'error', error: { type, message } };
  if (kind === 'ollama') return { error: message };
  return { error: { message, type, code: status } };
}

// ---- OpenAI ------------------------------------------------------------------------------

async function handleOpenAI(req, res, body, opts) {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const lastUser = [...messages].reverse().find((m) => m.role === 'user');
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  const stops = typeof body.stop === 'string' ? [body.stop] : body.stop;
  const plan = planReply(opts, { lastUser: contentText(lastUser?.content ?? ''), maxTokens, stops });
  const usage = {
    prompt_tokens: promptTokens(messages.map((m) => contentText(m.content))),
    completion_tokens: plan.tokens.length,
  };
  usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
  const id = 'chatcmpl-fake' + seq;
  const created = Math.floor(Date.now() / 1000);
  const model = body.model || 'fake-model';
  if (!body.stream) {
    if (opts.tokens_per_second > 0) await sleep((1000 * plan.tokens.length) / opts.tokens_per_second);
    return sendJson(res, 200, {
      id, object: 'chat.completion', created, model,
      choices: [{ index: 0, message: { role: 'assistant', content: plan.tokens.join('') }, finish_reason: plan.reason }],
      usage,
    });
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  const s = new Stream(req, res, opts);
  const chunk = (delta, finish) => 'data: ' + JSON.stringify({
    id, object: 'chat.completion.chunk', created, model,
    choices: [{ index: 0, delta, finish_reason: finish ?? null }],
  }) + '\n\n';
  if (!await s.write(chunk({ role: 'assistant', content: '' }))) return;
  let first = true;
  for (const t of plan.tokens) {
    if (!first) await s.pace();
    first = false;
    if (!await s.write(chunk({ content: t }))) return;
    if (opts.error_event) {
      await s.write('data: ' + JSON.stringify({ error: { message: 'injected ' + opts.error_event, type: opts.error_event } }) + '\n\n');
      return s.end();
    }
  }
  if (!await s.write(chunk({}, plan.reason))) return;
  if (body.stream_options && body.stream_options.include_usage) {
    if (!await s.write('data: ' + JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices: [], usage }) + '\n\n')) return;
  }
  if (!await s.write('data: [DONE]\n\n')) return;
  s.end();
}

// ---- Anthropic ---------------------------------------------------------------------------

async function handleAnthropic(req, res, body, opts) {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const lastUser = [...messages].reverse().find((m) => m.role === 'user');
  const systemText = typeof body.system === 'string' ? body.system : contentText(body.system);
  const plan = planReply(opts, { lastUser: contentText(lastUser?.content ?? ''), maxTokens: body.max_tokens, stops: body.stop_sequences });
  const reason = plan.reason === 'length' ? 'max_tokens' : plan.stopHit ? 'stop_sequence' : 'end_turn';
  const inputTokens = promptTokens([systemText, ...messages.map((m) => contentText(m.content))]);
  const id = 'msg_fake' + seq;
  const model = body.model || 'fake-model';
  if (!body.stream) {
    if (opts.tokens_per_second > 0) await sleep((1000 * plan.tokens.length) / opts.tokens_per_second);
    return sendJson(res, 200, {
      id, type: 'message', role: 'assistant', model,
      content: [{ type: 'text', text: plan.tokens.join('') }],
      stop_reason: reason, stop_sequence: null,
      usage: { input_tokens: inputTokens, output_tokens: plan.tokens.length },
    });
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  const s = new Stream(req, res, opts);
  const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  if (!await s.write(ev('message_start', {
    message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null,
      usage: { input_tokens: inputTokens, output_tokens: 1 } },
  }))) return;
  if (!await s.write(ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }))) return;
  if (!await s.write(ev('ping', {}))) return;
  let first = true;
  for (const t of plan.tokens) {
    if (!first) await s.pace();
    first = false;
    if (!await s.write(ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: t } }))) return;
    if (opts.error_event) {
      await s.write(ev('error', { error: { type: opts.error_event, message: 'injected ' + opts.error_event } }));
      return s.end();
    }
  }
  if (!await s.write(ev('content_block_stop', { index: 0 }))) return;
  if (!await s.write(ev('message_delta', { delta: { stop_reason: reason, stop_sequence: null }, usage: { output_tokens: plan.tokens.length } }))) return;
  if (!await s.write(ev('message_stop', {}))) return;
  s.end();
}

// ---- Ollama ------------------------------------------------------------------------------

async function handleOllama(req, res, body, opts) {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const lastUser = [...messages].reverse().find((m) => m.role === 'user');
  const o = body.options || {};
  const plan = planReply(opts, { lastUser: contentText(lastUser?.content ?? ''), maxTokens: o.num_predict, stops: o.stop });
  const model = body.model || 'fake-model';
  const promptEval = promptTokens(messages.map((m) => contentText(m.content)));
  const final = (content) => ({
    model, created_at: new Date().toISOString(), message: { role: 'assistant', content }, done: true,
    done_reason: plan.reason, total_duration: 1000, prompt_eval_count: promptEval, eval_count: plan.tokens.length,
  });
  if (body.stream === false) {
    if (opts.tokens_per_second > 0) await sleep((1000 * plan.tokens.length) / opts.tokens_per_second);
    return sendJson(res, 200, final(plan.tokens.join('')));
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.flushHeaders();
  const s = new Stream(req, res, opts);
  let first = true;
  for (const t of plan.tokens) {
    if (!first) await s.pace();
    first = false;
    const line = { model, created_at: new Date().toISOString(), message: { role: 'assistant', content: t }, done: false };
    if (!await s.write(JSON.stringify(line) + '\n')) return;
    if (opts.error_event) {
      await s.write(JSON.stringify({ error: 'injected ' + opts.error_event }) + '\n');
      return s.end();
    }
  }
  if (!await s.write(JSON.stringify(final('')) + '\n')) return;
  s.end();
}

// ---- dispatch ----------------------------------------------------------------------------

function providerKind(path) {
  if (path.endsWith('/chat/completions')) return 'openai';
  if (path.endsWith('/api/chat')) return 'ollama';
  if (path.endsWith('/messages')) return 'anthropic';
  return null;
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://fake');
  const path = url.pathname;
  const raw = await readBody(req);

  if (path === '/_control') {
    if (req.method === 'POST' && raw.length) {
      const patch = JSON.parse(raw.toString('utf8'));
      if ('stall_after_bytes' in patch && !('stall_requests' in patch)) patch.stall_requests = 1;
      settings = { ...settings, ...patch };
      if (!Array.isArray(settings.fail_next)) settings.fail_next = [];
    }
    return sendJson(res, 200, settings);
  }
  if (path === '/_received') return sendJson(res, 200, received);
  if (path === '/_reset') {
    settings = structuredClone(DEFAULTS);
    received = [];
    return sendJson(res, 200, { ok: true });
  }

  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (k === 'authorization' || k === 'x-api-key') continue;
    headers[k] = v;
  }
  const record = {
    seq: ++seq,
    time_ms: Date.now(),
    method: req.method,
    path: req.url,
    headers,
    has_authorization: 'authorization' in req.headers,
    has_x_api_key: 'x-api-key' in req.headers,
    body: raw.toString('utf8'),
    body_bytes: raw.length,
    body_sha256: crypto.createHash('sha256').update(raw).digest('hex'),
    status: 200,
  };
  received.push(record);

  const kind = providerKind(path);
  if (!kind || req.method !== 'POST') {
    record.status = 404;
    return sendJson(res, 404, { error: { message: `no route for ${req.method} ${path}`, type: 'not_found' } });
  }

  // Per-request settings: the global ones, overridden by the x-fake-control header.
  let opts = { ...settings };
  let overridesStall = false;
  if (req.headers['x-fake-control']) {
    try {
      const o = JSON.parse(req.headers['x-fake-control']);
      delete o.fail_next;
      overridesStall = 'stall_after_bytes' in o;
      opts = { ...opts, ...o };
    } catch { /* ignore a malformed override */ }
  }
  // A stall applies to the next `stall_requests` provider requests that get past fail_next.
  const consumeStall = () => {
    if (overridesStall) return;
    if (settings.stall_after_bytes === null || settings.stall_after_bytes === undefined) return;
    settings.stall_requests = (settings.stall_requests ?? 1) - 1;
    if (settings.stall_requests <= 0) { settings.stall_after_bytes = null; settings.stall_requests = 1; }
  };

  if (opts.latency_ms > 0) await sleep(opts.latency_ms);

  if (settings.fail_next.length > 0) {
    let f = settings.fail_next.shift();
    if (f === 'close') {
      record.status = 0;
      req.socket.destroy();
      return;
    }
    if (typeof f === 'number') f = { status: f };
    const extra = { ...(f.headers || {}) };
    const ra = f.retry_after ?? opts.retry_after;
    if (ra !== null && ra !== undefined) extra['retry-after'] = String(ra);
    record.status = f.status;
    return sendJson(res, f.status, errorBody(kind, f.status, f.message || `injected failure ${f.status}`), extra);
  }

  if (opts.require_key) {
    const auth = req.headers.authorization || '';
    const sent = auth.startsWith('Bearer ') ? auth.slice(7) : (req.headers['x-api-key'] || '');
    if (sent !== opts.require_key) {
      record.status = 401;
      return sendJson(res, 401, errorBody(kind, 401, `Incorrect API key provided: ${sent}. You can find your API key at https://fake.example/keys.`));
    }
  }

  let body;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    record.status = 400;
    return sendJson(res, 400, errorBody(kind, 400, 'request body is not valid JSON: ' + e.message));
  }
  if (kind === 'anthropic' && !Number.isInteger(body.max_tokens)) {
    record.status = 400;
    return sendJson(res, 400, errorBody(kind, 400, 'max_tokens: Field required'));
  }
  consumeStall();
  if (kind === 'openai') return handleOpenAI(req, res, body, opts);
  if (kind === 'anthropic') return handleAnthropic(req, res, body, opts);
  return handleOllama(req, res, body, opts);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    if (!res.headersSent) sendJson(res, 500, { error: { message: 'fake server error: ' + e.message } });
    else res.destroy();
  });
});
server.keepAliveTimeout = 5000;
server.listen(PORT, HOST, () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});

if (args.includes('--watch-stdin')) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
