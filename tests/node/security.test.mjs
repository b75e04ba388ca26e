// DNS-rebinding (Host) and CORS (Origin) protection, the API key, and the refusal to
// listen off loopback without one.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';
import OpenAI, { AuthenticationError } from 'openai';

import { assertServes, httpRequest, request, runHearth, startServer, tinyModel } from './helpers.mjs';

const T = { timeout: 60000 };
let plain;    // defaults
let cors;     // --allow-origin http://ok.example
let keyed;    // --api-key
const KEY = 'test-key-0123456789';

before(async () => {
  const model = `fim=${tinyModel()}`;
  plain = await startServer({ models: [model] });
  cors = await startServer({ models: [model], args: ['--allow-origin', 'http://ok.example'] });
  keyed = await startServer({ models: [model], args: ['--api-key', KEY] });
});
after(async () => {
  await Promise.all([plain?.stop(), cors?.stop(), keyed?.stop()]);
});

describe('Host and Origin', () => {
  test('Host: evil.example is a 403; then a request with a loopback Host is served', T, async () => {
    const bad = await httpRequest(plain.port, { path: '/api/tags', headers: { Host: 'evil.example' } });
    assert.equal(bad.status, 403, bad.text);
    assert.match(bad.body.error, /evil\.example/);
    assert.match(bad.body.error, /--allow-host/);
    const badPost = await httpRequest(plain.port, {
      method: 'POST', path: '/api/generate', headers: { Host: `evil.example:${plain.port}`, 'Content-Type': 'application/json' },
      body: { model: 'fim', prompt: 'x', stream: false, options: { num_predict: 1 } },
    });
    assert.equal(badPost.status, 403, badPost.text);
    for (const host of [`127.0.0.1:${plain.port}`, `localhost:${plain.port}`, 'localhost']) {
      const ok = await httpRequest(plain.port, { path: '/api/tags', headers: { Host: host } });
      assert.equal(ok.status, 200, `Host ${host}: ${ok.text}`);
    }
    await assertServes(plain);
  });

  test('Origin: http://evil.example is a 403; then a request without Origin is served', T, async () => {
    const bad = await httpRequest(plain.port, {
      method: 'POST', path: '/api/generate', headers: { Origin: 'http://evil.example', 'Content-Type': 'application/json' },
      body: { model: 'fim', prompt: 'x', stream: false, options: { num_predict: 1 } },
    });
    assert.equal(bad.status, 403, bad.text);
    assert.match(bad.body.error, /evil\.example/);
    assert.match(bad.body.error, /--allow-origin/);
    assert.equal(bad.headers['access-control-allow-origin'], undefined);
    const preflight = await httpRequest(plain.port, {
      method: 'OPTIONS', path: '/api/generate',
      headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' },
    });
    assert.equal(preflight.status, 403);
    assert.equal(preflight.headers['access-control-allow-origin'], undefined);
    await assertServes(plain);
  });

  test('--allow-origin: that origin gets Access-Control-Allow-Origin and a 204 preflight', T, async () => {
    const get = await httpRequest(cors.port, { path: '/api/tags', headers: { Origin: 'http://ok.example' } });
    assert.equal(get.status, 200, get.text);
    assert.equal(get.headers['access-control-allow-origin'], 'http://ok.example');
    const preflight = await httpRequest(cors.port, {
      method: 'OPTIONS', path: '/v1/chat/completions',
      headers: {
        Origin: 'http://ok.example', 'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type, authorization',
      },
    });
    assert.equal(preflight.status, 204, preflight.text);
    assert.equal(preflight.text, '');
    assert.equal(preflight.headers['access-control-allow-origin'], 'http://ok.example');
    assert.match(preflight.headers['access-control-allow-methods'] ?? '', /POST/);
    assert.match((preflight.headers['access-control-allow-headers'] ?? '').toLowerCase(), /content-type/);
    const post = await httpRequest(cors.port, {
      method: 'POST', path: '/api/generate', headers: { Origin: 'http://ok.example', 'Content-Type': 'application/json' },
      body: { model: 'fim', prompt: 'x', stream: false, options: { num_predict: 1 } },
    });
    assert.equal(post.status, 200, post.text);
    assert.equal(post.headers['access-control-allow-origin'], 'http://ok.example');
    // Other origins stay refused, and there is never a wildcard.
    const other = await httpRequest(cors.port, { path: '/api/tags', headers: { Origin: 'http://evil.example' } });
    assert.equal(other.status, 403);
    const none = await httpRequest(cors.port, { path: '/api/tags' });
    assert.equal(none.status, 200);
    assert.notEqual(none.headers['access-control-allow-origin'], '*');
    await assertServes(cors);
  });
});

describe('API key', () => {
  test('hearth serve --host 0.0.0.0 without --api-key exits non-zero naming the API key', T, () => {
    const r = runHearth(['serve', '--host', '0.0.0.0', '--port', '0', '--model', `fim=${tinyModel()}`],
      { timeoutMs: 20000, env: { HEARTH_API_KEY: '', HEARTH_HOST: '' } });
    assert.equal(r.signal, null, `it kept running: ${r.stderr}`);
    assert.notEqual(r.status, 0, r.stderr);
    assert.match(r.stderr, /API key|api-key/i);
    assert.doesNotMatch(r.stderr, /listening on/);
  });

  test('with --api-key: no key or a wrong key is a 401; the right Bearer key is a 200', T, async () => {
    const none = await request(`${keyed.url}/api/tags`);
    assert.equal(none.status, 401, none.text);
    assert.match(none.text, /Authorization: Bearer/);
    const wrong = await request(`${keyed.url}/api/tags`, { headers: { Authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401);
    const notBearer = await request(`${keyed.url}/api/tags`, { headers: { Authorization: KEY } });
    assert.equal(notBearer.status, 401);
    const noKeyPost = await request(`${keyed.url}/v1/chat/completions`, {
      body: { model: 'fim', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 },
    });
    assert.equal(noKeyPost.status, 401);
    const ok = await request(`${keyed.url}/api/tags`, { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(ok.status, 200, ok.text);
    const gen = await request(`${keyed.url}/api/generate`, {
      headers: { Authorization: `Bearer ${KEY}` }, body: { model: 'fim', prompt: 'x', stream: false, options: { num_predict: 1 } },
    });
    assert.equal(gen.status, 200, gen.text);
    // /health stays public for probes.
    assert.equal((await request(`${keyed.url}/health`)).status, 200);
  });

  test('with --api-key: the openai client with apiKey works, a wrong key is AuthenticationError', T, async () => {
    const good = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const ids = [];
    for await (const m of good.models.list()) ids.push(m.id);
    assert.ok(ids.includes('fim:latest'));
    const r = await good.chat.completions.create({ model: 'fim', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
    assert.equal(r.choices.length, 1);
    const bad = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await assert.rejects(bad.models.list(), (err) => err instanceof AuthenticationError && err.status === 401);
    // Still serving after the refusals.
    const again = await good.chat.completions.create({ model: 'fim', messages: [{ role: 'user', content: 'y' }], max_tokens: 1 });
    assert.equal(again.choices.length, 1);
  });

  test('with --api-key: the ollama client with an Authorization header works', T, async () => {
    const ollama = new Ollama({ host: keyed.url, headers: { Authorization: `Bearer ${KEY}` } });
    const { models } = await ollama.list();
    assert.ok(models.some((m) => m.name === 'fim:latest'));
    const anonymous = new Ollama({ host: keyed.url });
    await assert.rejects(anonymous.list(), (err) => err.status_code === 401);
  });
});
