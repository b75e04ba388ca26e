// hearth serve driven by the real `openai` npm client (openai-node).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI, { BadRequestError, NotFoundError } from 'openai';

import { COLOR_SCHEMA, SKIP_STORIES, STORIES_GOLDEN, l2norm, standardModels, startServer } from './helpers.mjs';

const T = { timeout: 60000 };
let server;
let client;

before(async () => {
  server = await startServer({ models: standardModels() });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 60000 });
});
after(async () => {
  await server?.stop();
});

describe('openai-node', () => {
  test('models.list()', T, async () => {
    const ids = [];
    for await (const m of client.models.list()) {
      assert.equal(m.object, 'model');
      ids.push(m.id);
    }
    assert.ok(ids.includes('fim:latest'), `got ${ids}`);
    const one = await client.models.retrieve('fim');
    assert.equal(one.id, 'fim:latest');
  });

  test('chat.completions.create non-stream', T, async () => {
    const r = await client.chat.completions.create({
      model: 'fim', messages: [{ role: 'user', content: 'Write a haiku.' }], max_tokens: 8, temperature: 0,
    });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  });

  test('chat.completions.create stream with include_usage: a usage chunk, then the end', T, async () => {
    const stream = await client.chat.completions.create({
      model: 'fim', messages: [{ role: 'user', content: 'Count to ten.' }], max_tokens: 8, temperature: 0,
      stream: true, stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);  // ends: the client saw [DONE]
    assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
    const usageChunk = chunks[chunks.length - 1];
    assert.deepEqual(usageChunk.choices, []);
    assert.ok(usageChunk.usage.completion_tokens >= 1 && usageChunk.usage.completion_tokens <= 8);
    assert.ok(usageChunk.usage.prompt_tokens > 0);
    for (const c of chunks.slice(0, -1)) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.usage ?? null, null);
    }
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const finish = chunks[chunks.length - 2].choices[0].finish_reason;
    assert.ok(['stop', 'length'].includes(finish), `finish_reason ${finish}`);
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
  });

  test('chat stream text equals non-stream text (stories, greedy)', { ...T, skip: SKIP_STORIES }, async () => {
    const req = { model: 'stories', messages: [{ role: 'user', content: 'A story, please.' }], max_tokens: 20, temperature: 0 };
    const whole = await client.chat.completions.create(req);
    let text = '';
    for await (const c of await client.chat.completions.create({ ...req, stream: true })) {
      text += c.choices[0]?.delta?.content ?? '';
    }
    assert.ok(whole.choices[0].message.content.length > 0);
    assert.equal(text, whole.choices[0].message.content);
  });

  test('completions.create: greedy golden text (stories)', { ...T, skip: SKIP_STORIES }, async () => {
    const r = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 11, temperature: 0 });
    assert.equal(r.choices[0].text, STORIES_GOLDEN);
    assert.equal(r.choices[0].finish_reason, 'length');
  });

  test('completions.create with suffix (FIM model)', T, async () => {
    const prompt = 'def add(a, b):\n    return ';
    const suffix = '\n\nprint(add(1, 2))\n';
    const fim = await client.completions.create({ model: 'fim', prompt, suffix, max_tokens: 6, temperature: 0 });
    assert.equal(fim.object, 'text_completion');
    assert.equal(typeof fim.choices[0].text, 'string');
    assert.ok(fim.usage.completion_tokens >= 1 && fim.usage.completion_tokens <= 6);
    // The suffix and the FIM tokens are part of the prompt.
    const plain = await client.completions.create({ model: 'fim', prompt, max_tokens: 1, temperature: 0 });
    assert.ok(fim.usage.prompt_tokens > plain.usage.prompt_tokens + 3,
      `fim prompt ${fim.usage.prompt_tokens} vs plain ${plain.usage.prompt_tokens}`);
  });

  test('completions.create with suffix on a model without FIM tokens is a 400', { ...T, skip: SKIP_STORIES }, async () => {
    await assert.rejects(
      client.completions.create({ model: 'stories', prompt: 'Once', suffix: 'end', max_tokens: 4 }),
      (err) => err instanceof BadRequestError && /fill-in-the-middle/.test(err.message),
    );
  });

  test('embeddings.create', T, async () => {
    const r = await client.embeddings.create({ model: 'fim', input: ['alpha', 'beta', 'gamma'], encoding_format: 'float' });
    assert.equal(r.data.length, 3);
    r.data.forEach((d, i) => {
      assert.equal(d.index, i);
      assert.equal(d.embedding.length, 64);
      assert.ok(Math.abs(l2norm(d.embedding) - 1) < 1e-3);
    });
    assert.ok(r.usage.prompt_tokens >= 3);
  });

  // openai-node sends encoding_format "base64" whenever the caller does not pick one
  // (the common call), and decodes the base64 little-endian float32 array itself.
  test('embeddings.create with the client default encoding (base64)', {
    ...T,
  }, async () => {
    const r = await client.embeddings.create({ model: 'fim', input: 'alpha' });
    assert.equal(r.data.length, 1);
    assert.equal(r.data[0].embedding.length, 64);
    assert.ok(Math.abs(l2norm(Array.from(r.data[0].embedding)) - 1) < 1e-3);
  });

  test('response_format json_schema gives JSON matching the schema', T, async () => {
    const r = await client.chat.completions.create({
      model: 'fim', messages: [{ role: 'user', content: 'Pick a color.' }], max_tokens: 400, temperature: 0,
      response_format: { type: 'json_schema', json_schema: { name: 'color', schema: COLOR_SCHEMA, strict: true } },
    });
    assert.equal(r.choices[0].finish_reason, 'stop', `unfinished: ${r.choices[0].message.content}`);
    const value = JSON.parse(r.choices[0].message.content);
    assert.ok(COLOR_SCHEMA.properties.color.enum.includes(value.color));
  });

  test('response_format json_object gives a JSON object', T, async () => {
    const r = await client.chat.completions.create({
      model: 'fim', messages: [{ role: 'user', content: 'JSON please.' }], max_tokens: 64, temperature: 0,
      response_format: { type: 'json_object' },
    });
    const text = r.choices[0].message.content;
    if (r.choices[0].finish_reason === 'stop') assert.equal(typeof JSON.parse(text), 'object');
    else assert.match(text, /^\s*\{/);
  });

  test('unknown model: NotFoundError, then the server still serves', T, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
      (err) => {
        assert.ok(err instanceof NotFoundError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 404);
        assert.match(err.message, /no-such-model/);
        return true;
      },
    );
    await assert.rejects(client.models.retrieve('no-such-model'), NotFoundError);
    await assert.rejects(client.embeddings.create({ model: 'no-such-model', input: 'x', encoding_format: 'float' }), NotFoundError);
    const r = await client.chat.completions.create({ model: 'fim', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
    assert.equal(r.choices.length, 1);
  });

  test('n=2: BadRequestError naming n, then the server still serves', T, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'fim', n: 2, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }),
      (err) => {
        assert.ok(err instanceof BadRequestError, `got ${err?.constructor?.name}`);
        assert.equal(err.status, 400);
        assert.equal(err.param, 'n');
        assert.match(err.message, /'n'/);
        return true;
      },
    );
    const r = await client.chat.completions.create({ model: 'fim', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
    assert.equal(r.choices.length, 1);
  });
});
