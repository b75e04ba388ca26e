// Bad input gets a 4xx whose message names the field or the fix, and the server keeps
// serving afterwards. Also: context overflow, 413 for a huge declared body, 503 with
// Retry-After when the queue is full, and cancellation when the client goes away.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  assertServes, errorMessage, postJson, rawHttp, request, sleep, standardModels, startServer, tinyModel,
} from './helpers.mjs';

const T = { timeout: 60000 };
let server;  // default flags
let small;   // --ctx 64
let busy;    // --parallel 1 --queue 0

before(async () => {
  server = await startServer({ models: standardModels() });
  small = await startServer({ models: [`fim=${tinyModel()}`], args: ['--ctx', '64'] });
  busy = await startServer({ models: [`fim=${tinyModel()}`], args: ['--parallel', '1', '--queue', '0', '--ctx', '4096'] });
});
after(async () => {
  await Promise.all([server?.stop(), small?.stop(), busy?.stop()]);
});

function expectError(r, status, pattern) {
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${r.text}`);
  assert.match(r.headers.get('content-type') ?? '', /application\/json/);
  const message = errorMessage(r.body);
  assert.ok(message.length > 0, `no error message in ${r.text}`);
  if (pattern) assert.match(message, pattern);
  return message;
}

// Each case: [description, path, body (object, or a string sent as is), status, message
// pattern, and for a known server bug the todo reason].
const user = [{ role: 'user', content: 'hi' }];
const CASES = [
  ['malformed JSON (Ollama)', '/api/generate', '{"model": "fim", "prompt": ', 400, /not valid JSON/],
  ['malformed JSON (OpenAI)', '/v1/chat/completions', '{"model": "fim", messages: []}', 400, /not valid JSON/],
  ['malformed JSON (llama.cpp)', '/completion', '{"prompt": "x",}', 400, /not valid JSON/],
  ['a JSON array body', '/api/chat', '[1, 2]', 400, /JSON object/],
  ['an empty body', '/api/generate', '', 400, /empty/],
  ['temperature "hot" (Ollama)', '/api/generate', { model: 'fim', prompt: 'x', options: { temperature: 'hot' } }, 400, /'temperature' must be a number/],
  ['temperature "hot" (OpenAI)', '/v1/chat/completions', { model: 'fim', messages: user, temperature: 'hot' }, 400, /'temperature' must be a number/],
  ['temperature "hot" (llama.cpp)', '/completion', { prompt: 'x', temperature: 'hot' }, 400, /'temperature' must be a number/],
  ['messages not an array (Ollama)', '/api/chat', { model: 'fim', messages: 'hi' }, 400, /'messages' must be an array/],
  ['messages not an array (OpenAI)', '/v1/chat/completions', { model: 'fim', messages: { role: 'user' } }, 400, /'messages' must be an array/],
  ['a message without a valid role', '/api/chat', { model: 'fim', messages: [{ role: 'wizard', content: 'x' }] }, 400, /messages\[0\]\.role/],
  ['num_predict "x"', '/api/generate', { model: 'fim', prompt: 'x', options: { num_predict: 'x' } }, 400, /'num_predict' must be an integer/],
  ['max_tokens 1.5', '/v1/completions', { model: 'fim', prompt: 'x', max_tokens: 1.5 }, 400, /'max_tokens' must be an integer/],
  ['options not an object', '/api/generate', { model: 'fim', prompt: 'x', options: 'fast' }, 400, /'options' must be an object/],
  ['stream "yes"', '/api/generate', { model: 'fim', prompt: 'x', stream: 'yes' }, 400, /'stream' must be true or false/],
  ['model not a string', '/api/generate', { model: 42, prompt: 'x' }, 400, /'model' must be a string/],
  ['model missing', '/api/chat', { messages: user }, 400, /'model' is required/],
  ['temperature -1 (Ollama)', '/api/generate', { model: 'fim', prompt: 'x', options: { temperature: -1 } }, 400, /'temperature' must be between/],
  ['temperature -1 (OpenAI)', '/v1/chat/completions', { model: 'fim', messages: user, temperature: -1 }, 400, /'temperature' must be between 0 and 2/],
  ['top_p 5 (Ollama)', '/api/generate', { model: 'fim', prompt: 'x', options: { top_p: 5 } }, 400, /'top_p' must be between 0 and 1/],
  ['top_p 5 (OpenAI)', '/v1/chat/completions', { model: 'fim', messages: user, top_p: 5 }, 400, /'top_p' must be between 0 and 1/],
  ['num_ctx -5', '/api/generate', { model: 'fim', prompt: 'x', options: { num_ctx: -5 } }, 400, /'num_ctx' must be between/],
  ['num_ctx 1e12', '/api/chat', { model: 'fim', messages: user, options: { num_ctx: 1e12 } }, 400, /'num_ctx' must be between/],
  ['num_predict 1e300', '/api/generate', { model: 'fim', prompt: 'x', options: { num_predict: 1e300 } }, 400, /'num_predict' must be/],
  ['n_predict -7 (llama.cpp)', '/completion', { prompt: 'x', n_predict: -7 }, 400, /'n_predict' must be between/],
  ['max_tokens -1 (OpenAI)', '/v1/chat/completions', { model: 'fim', messages: user, max_tokens: -1 }, 400, /'max_tokens' must be between/],
  ['keep_alive "soon"', '/api/generate', { model: 'fim', prompt: 'x', keep_alive: 'soon' }, 400, /'keep_alive'/],
  ['unknown model (Ollama generate)', '/api/generate', { model: 'no-such-model', prompt: 'x' }, 404, /no-such-model/],
  ['unknown model (Ollama chat)', '/api/chat', { model: 'no-such-model', messages: user }, 404, /no-such-model/],
  ['unknown model (Ollama show)', '/api/show', { model: 'no-such-model' }, 404, /no-such-model/],
  ['unknown model (Ollama embed)', '/api/embed', { model: 'no-such-model', input: 'x' }, 404, /no-such-model/],
  ['unknown model (OpenAI chat)', '/v1/chat/completions', { model: 'no-such-model', messages: user }, 404, /no-such-model/],
  ['unknown model (OpenAI embeddings)', '/v1/embeddings', { model: 'no-such-model', input: 'x' }, 404, /no-such-model/],
  ['unknown model (llama.cpp)', '/completion', { model: 'no-such-model', prompt: 'x' }, 404, /no-such-model/],
  ['detokenize [999999999]', '/detokenize', { tokens: [999999999] }, 400, /999999999.*out of range/],
  ['detokenize [-1]', '/detokenize', { tokens: [-1] }, 400, /-1.*out of range/],
  ['completion prompt [-5]', '/completion', { prompt: [-5], n_predict: 1 }, 400, /-5.*out of range/],
  ['completion prompt [2^40]', '/completion', { prompt: [2 ** 40], n_predict: 1 }, 400, /out of range/],
  ['completion prompt [2^32 + 5]', '/completion', { prompt: [2 ** 32 + 5], n_predict: 1 }, 400, /out of range/],
  ['Ollama context [2^40]', '/api/generate', { model: 'fim', prompt: 'x', context: [2 ** 40], options: { num_predict: 1 } }, 400, /out of range|context/],
  ['Ollama context [-3]', '/api/generate', { model: 'fim', prompt: 'x', context: [-3], options: { num_predict: 1 } }, 400, /-3|context/],
  ['format "yaml"', '/api/generate', { model: 'fim', prompt: 'x', format: 'yaml' }, 400, /'format' must be "json" or a JSON schema/],
  ['response_format json_schema without schema', '/v1/chat/completions', { model: 'fim', messages: user, response_format: { type: 'json_schema' } }, 400, /json_schema/],
  ['n=2', '/v1/chat/completions', { model: 'fim', messages: user, n: 2 }, 400, /'n' must be 1/],
];

describe('bad input: 4xx naming the problem, then the server still serves', () => {
  for (const [name, path, body, status, pattern, todo] of CASES) {
    test(name, todo ? { ...T, todo } : T, async () => {
      const r = await request(`${server.url}${path}`, {
        body, raw: typeof body === 'string', headers: { 'Content-Type': 'application/json' },
      });
      expectError(r, status, pattern);
      if (path.startsWith('/v1/')) {
        assert.equal(typeof r.body.error, 'object');
        assert.equal(typeof r.body.error.type, 'string');
      }
      await assertServes(server);
    });
  }

  test('an unknown endpoint is a 404 and a wrong method a 405', T, async () => {
    expectError(await request(`${server.url}/api/nothing-here`), 404, /\/api\/nothing-here/);
    expectError(await request(`${server.url}/api/generate`), 405, /GET/);
    await assertServes(server);
  });
});

describe('limits', () => {
  const longPrompt = 'def function_number_one(argument): return argument + 1\n'.repeat(20);

  test('a prompt longer than the context is a 400 with both token counts', T, async () => {
    const cases = [
      ['/api/generate', { model: 'fim', prompt: longPrompt, raw: true, stream: false }],
      ['/api/chat', { model: 'fim', messages: [{ role: 'user', content: longPrompt }], stream: false }],
      ['/v1/chat/completions', { model: 'fim', messages: [{ role: 'user', content: longPrompt }] }],
      ['/completion', { prompt: longPrompt }],
    ];
    for (const [path, body] of cases) {
      const r = await postJson(`${small.url}${path}`, body);
      const message = expectError(r, 400);
      const m = /(\d+) tokens.*?(\d+) tokens/.exec(message);
      assert.ok(m, `${path}: the message does not give both token counts: ${message}`);
      assert.ok(Number(m[1]) > 64, `${path}: prompt count ${m[1]}`);
      assert.equal(Number(m[2]), 64, `${path}: context ${m[2]}`);
      assert.match(message, /num_ctx|context/);
    }
    // Streamed too: the error comes before any chunk, as a proper status.
    const s = await postJson(`${small.url}/api/generate`, { model: 'fim', prompt: longPrompt, raw: true, stream: true });
    expectError(s, 400, /tokens/);
    await assertServes(small);
  });

  test('a declared 2 GiB body is a 413 without reading it, and the server still serves', T, async () => {
    const head = `POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nContent-Type: application/json\r\n` +
      'Content-Length: 2147483648\r\n\r\n';
    const t0 = Date.now();
    const got = await rawHttp(server.port, head, { untilMs: 10000 });
    assert.match(got, /^HTTP\/1\.1 413 /, `got ${JSON.stringify(got.slice(0, 200))}`);
    assert.match(got, /2147483648/);
    assert.ok(Date.now() - t0 < 5000, 'the 413 came only after a timeout');
    await assertServes(server);
  });

  test('more Content-Length than body: the server times out or answers, and still serves', T, async () => {
    // A body sent partly then the connection closed must not wedge a worker.
    const body = '{"model":"fim","prompt":"x"';
    const head = `POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length + 100}\r\n\r\n`;
    await rawHttp(server.port, head + body, { untilMs: 500, endAfterWrite: true });
    await assertServes(server);
  });
});

describe('load shedding and cancellation (--parallel 1 --queue 0)', () => {
  // Starts a generation that runs for a long time and resolves once its first chunk is in.
  async function startLong(path, body) {
    const controller = new AbortController();
    const res = await fetch(`${busy.url}${path}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: controller.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const first = await reader.read();
    assert.ok(!first.done && first.value.length > 0);
    return {
      abort() {
        controller.abort();
        reader.cancel().catch(() => {});
      },
    };
  }

  async function runningGauge() {
    const m = await request(`${busy.url}/metrics`);
    return Number(/^hearth_requests_running (\S+)$/m.exec(m.text)?.[1]);
  }

  async function waitIdle(ms) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (await runningGauge() === 0) return true;
      await sleep(25);
    }
    return false;
  }

  test('a full queue is a 503 with Retry-After; the server serves again after', T, async () => {
    const long = await startLong('/completion', {
      prompt: 'def', n_predict: 100000, ignore_eos: true, temperature: 0, stream: true,
    });
    try {
      for (const [path, body] of [
        ['/api/generate', { model: 'fim', prompt: 'x', stream: false, options: { num_predict: 1 } }],
        ['/api/chat', { model: 'fim', messages: user, stream: true, options: { num_predict: 1 } }],
        ['/v1/chat/completions', { model: 'fim', messages: user, max_tokens: 1 }],
        ['/v1/completions', { model: 'fim', prompt: 'x', max_tokens: 1, stream: true }],
        ['/completion', { prompt: 'x', n_predict: 1 }],
      ]) {
        const r = await postJson(`${busy.url}${path}`, body);
        expectError(r, 503, /capacity|retry/i);
        const retryAfter = r.headers.get('retry-after');
        assert.ok(retryAfter !== null && Number(retryAfter) >= 1, `${path}: Retry-After ${retryAfter}`);
      }
      // Requests that need no generation slot still work while it is busy.
      assert.equal((await request(`${busy.url}/api/tags`)).status, 200);
      assert.equal((await postJson(`${busy.url}/tokenize`, { content: 'x' })).status, 200);
    } finally {
      long.abort();
    }
    assert.ok(await waitIdle(3000), 'the aborted generation is still running');
    await assertServes(busy);
  });

  for (const [surface, path, body] of [
    ['llama.cpp', '/completion', { prompt: 'def', n_predict: 100000, ignore_eos: true, stream: true }],
    ['Ollama', '/api/generate', { model: 'fim', prompt: 'def', options: { num_predict: 100000, temperature: 0 } }],
    ['OpenAI', '/v1/chat/completions', { model: 'fim', messages: user, max_tokens: 100000, temperature: 0, stream: true }],
  ]) {
    test(`client disconnect cancels the generation (${surface})`, T, async () => {
      const long = await startLong(path, body);
      assert.equal(await runningGauge(), 1);
      const t0 = Date.now();
      long.abort();
      assert.ok(await waitIdle(1000), `still running ${Date.now() - t0} ms after the disconnect`);
      // The only slot is free: a new request is served, not refused with 503.
      await assertServes(busy);
    });
  }

  test('client disconnect cancels a non-streamed generation too', T, async () => {
    const controller = new AbortController();
    const pending = fetch(`${busy.url}/api/generate`, {
      method: 'POST', signal: controller.signal,
      body: JSON.stringify({ model: 'fim', prompt: 'def', stream: false, options: { num_predict: 100000, temperature: 0 } }),
    }).catch((e) => e);
    const deadline = Date.now() + 10000;
    while (await runningGauge() !== 1) {
      assert.ok(Date.now() < deadline, 'the generation never started');
      await sleep(25);
    }
    const t0 = Date.now();
    controller.abort();
    assert.equal((await pending).name, 'AbortError');
    assert.ok(await waitIdle(1000), `still running ${Date.now() - t0} ms after the disconnect`);
    await assertServes(busy);
  });

  test('/slots shows no slot processing within ~1 s of a disconnect', {
    ...T,
  }, async () => {
    const long = await startLong('/completion', { prompt: 'def', n_predict: 100000, ignore_eos: true, stream: true });
    const during = (await request(`${busy.url}/slots`)).body;
    assert.ok(during.some((s) => s.is_processing), `while generating: ${JSON.stringify(during)}`);
    long.abort();
    const deadline = Date.now() + 1000;
    let slots;
    do {
      slots = (await request(`${busy.url}/slots`)).body;
      if (!slots.some((s) => s.is_processing)) break;
      await sleep(25);
    } while (Date.now() < deadline);
    assert.deepEqual(slots.filter((s) => s.is_processing), []);
    await assertServes(busy);
  });
});
