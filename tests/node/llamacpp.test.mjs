// The llama.cpp server surface: /completion, /infill, /tokenize, /detokenize, /health,
// /slots, /metrics.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { SKIP_STORIES, STORIES_PROMPT, postJson, request, standardModels, startServer } from './helpers.mjs';

const T = { timeout: 60000 };
let server;

before(async () => {
  server = await startServer({ models: standardModels() });  // default model: fim
});
after(async () => {
  await server?.stop();
});

describe('/completion', () => {
  test('string prompt and token-array prompt give the same greedy text (stories)', { ...T, skip: SKIP_STORIES }, async () => {
    const s = await postJson(`${server.url}/completion`, { model: 'stories', prompt: STORIES_PROMPT, n_predict: 8, temperature: 0 });
    assert.equal(s.status, 200, s.text);
    assert.equal(s.body.content, ', there was a little girl');
    assert.equal(s.body.stop, true);
    assert.equal(s.body.tokens_predicted, 8);
    const tok = await postJson(`${server.url}/tokenize`, { model: 'stories', content: STORIES_PROMPT, add_special: true });
    assert.equal(tok.status, 200, tok.text);
    const t = await postJson(`${server.url}/completion`, { model: 'stories', prompt: tok.body.tokens, n_predict: 8, temperature: 0 });
    assert.equal(t.status, 200, t.text);
    assert.equal(t.body.content, s.body.content);
    assert.equal(t.body.tokens_evaluated, tok.body.tokens.length);
  });

  test('string and token-array prompts on the default model', T, async () => {
    const s = await postJson(`${server.url}/completion`, { prompt: 'def main():', n_predict: 6, temperature: 0, return_tokens: true });
    assert.equal(s.status, 200, s.text);
    assert.equal(s.body.model, 'fim:latest');
    assert.ok(s.body.tokens_predicted >= 1 && s.body.tokens_predicted <= 6);
    assert.equal(s.body.tokens.length, s.body.tokens_predicted);
    const tok = await postJson(`${server.url}/tokenize`, { content: 'def main():' });
    const t = await postJson(`${server.url}/completion`, { prompt: tok.body.tokens, n_predict: 6, temperature: 0, return_tokens: true });
    assert.equal(t.status, 200, t.text);
    assert.equal(t.body.tokens_evaluated, tok.body.tokens.length);
    assert.deepEqual(t.body.tokens, s.body.tokens);
    // Mixed array: token ids and strings.
    const m = await postJson(`${server.url}/completion`, { prompt: [tok.body.tokens[0], ' main():'], n_predict: 2 });
    assert.equal(m.status, 200, m.text);
  });
});

describe('/infill', () => {
  test('input_extra is part of the prompt', T, async () => {
    const base = { input_prefix: 'def add(a, b):\n    return ', input_suffix: '\n', n_predict: 8, temperature: 0 };
    const plain = await postJson(`${server.url}/infill`, base);
    assert.equal(plain.status, 200, plain.text);
    assert.equal(plain.body.stop, true);
    assert.ok(plain.body.tokens_predicted >= 1 && plain.body.tokens_predicted <= 8);
    const extra = await postJson(`${server.url}/infill`, {
      ...base,
      input_extra: [{ filename: 'util.py', text: 'def sub(a, b):\n    return a - b\n' }],
    });
    assert.equal(extra.status, 200, extra.text);
    assert.ok(extra.body.tokens_evaluated > plain.body.tokens_evaluated + 10,
      `with input_extra ${extra.body.tokens_evaluated} vs without ${plain.body.tokens_evaluated}`);
    const bad = await postJson(`${server.url}/infill`, { ...base, input_extra: 'util.py' });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /input_extra/);
  });

  test('/infill on a model without FIM tokens is a 400 naming the problem', { ...T, skip: SKIP_STORIES }, async () => {
    const r = await postJson(`${server.url}/infill`, { model: 'stories', input_prefix: 'a', input_suffix: 'b', n_predict: 2 });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /fill-in-the-middle/);
  });
});

describe('/tokenize and /detokenize', () => {
  const texts = ['Hello world', 'def add(a, b):\n\treturn a + b  # sum', 'Grüße, 世界! 🎉'];
  for (const content of texts) {
    test(`round trip: ${JSON.stringify(content)}`, T, async () => {
      const tok = await postJson(`${server.url}/tokenize`, { content });
      assert.equal(tok.status, 200, tok.text);
      assert.ok(tok.body.tokens.length >= 2);
      assert.ok(tok.body.tokens.every((t) => Number.isInteger(t)));
      const detok = await postJson(`${server.url}/detokenize`, { tokens: tok.body.tokens });
      assert.equal(detok.status, 200, detok.text);
      assert.equal(detok.body.content, content);
      const pieces = await postJson(`${server.url}/tokenize`, { content, with_pieces: true });
      assert.deepEqual(pieces.body.tokens.map((p) => p.id), tok.body.tokens);
      // Pieces are strings, or byte arrays where a piece is not valid UTF-8 alone.
      const bytes = Buffer.concat(pieces.body.tokens.map((p) => (
        typeof p.piece === 'string' ? Buffer.from(p.piece, 'utf8') : Buffer.from(p.piece))));
      assert.equal(bytes.toString('utf8'), content);
    });
  }

  test('round trip on stories', { ...T, skip: SKIP_STORIES }, async () => {
    const tok = await postJson(`${server.url}/tokenize`, { model: 'stories', content: STORIES_PROMPT, with_pieces: true });
    assert.equal(tok.status, 200);
    const detok = await postJson(`${server.url}/detokenize`, { model: 'stories', tokens: tok.body.tokens.map((p) => p.id) });
    assert.equal(detok.body.content.trim(), STORIES_PROMPT);
  });
});

describe('health, slots, metrics', () => {
  test('/health', T, async () => {
    const r = await request(`${server.url}/health`);
    assert.equal(r.status, 200);
    assert.equal(r.body.status, 'ok');
  });

  test('/slots', T, async () => {
    await postJson(`${server.url}/completion`, { prompt: 'x', n_predict: 1 });
    const r = await request(`${server.url}/slots`);
    assert.equal(r.status, 200);
    assert.ok(Array.isArray(r.body) && r.body.length >= 1);
    for (const s of r.body) {
      assert.ok(Number.isInteger(s.id));
      assert.ok(Number.isInteger(s.n_ctx) && s.n_ctx > 0);
      assert.equal(typeof s.is_processing, 'boolean');
    }
    assert.ok(r.body.some((s) => s.model === 'fim:latest'));
  });

  test('/slots: no slot is processing once requests have finished', {
    ...T,
  }, async () => {
    for (const n of [1, 3, 5]) {
      const r = await postJson(`${server.url}/completion`, { prompt: `n = ${n}`, n_predict: n, temperature: 0 });
      assert.equal(r.status, 200);
    }
    const deadline = Date.now() + 2000;
    let slots;
    do {
      slots = (await request(`${server.url}/slots`)).body;
      if (!slots.some((s) => s.is_processing)) break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < deadline);
    assert.deepEqual(slots.filter((s) => s.is_processing), [], 'no request is running, yet /slots says processing');
  });

  test('/metrics is Prometheus text with request counts and the TTFT histogram', T, async () => {
    await postJson(`${server.url}/completion`, { prompt: 'x', n_predict: 2 });
    const r = await request(`${server.url}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/plain/);
    assert.match(r.text, /^# TYPE hearth_requests_total counter$/m);
    assert.match(r.text, /^hearth_requests_total\{endpoint="\/completion",status="200"\} \d+/m);
    assert.match(r.text, /^hearth_time_to_first_token_seconds_bucket\{le="[^"]+"\} \d+/m);
    assert.match(r.text, /^hearth_time_to_first_token_seconds_bucket\{le="\+Inf"\} [1-9]\d*/m);
    // Every sample line is "name{labels} value".
    for (const line of r.text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? ([-+0-9.eE]+|NaN|[+-]Inf)$/, line);
    }
  });
});
