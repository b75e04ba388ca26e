// hearth serve driven by the real `ollama` npm client (ollama-js).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';

import {
  COLOR_SCHEMA, HAVE_STORIES, SKIP_STORIES, STORIES_GOLDEN, STORIES_PROMPT, l2norm, standardModels, startServer,
} from './helpers.mjs';

const T = { timeout: 60000 };
let server;
let ollama;

before(async () => {
  server = await startServer({ models: standardModels() });
  ollama = new Ollama({ host: server.url });
});
after(async () => {
  await server?.stop();
});

describe('ollama-js: models', () => {
  test('list() names every served model', T, async () => {
    const { models } = await ollama.list();
    const names = models.map((m) => m.name);
    assert.ok(names.includes('fim:latest'), `got ${names}`);
    if (HAVE_STORIES) assert.ok(names.includes('stories:latest'), `got ${names}`);
    for (const m of models) {
      assert.equal(typeof m.size, 'number');
      assert.match(m.digest, /^[0-9a-f]{64}$/);
      assert.equal(m.details.format, 'gguf');
    }
  });

  test('show() of the FIM model: template has .Suffix, parameters have num_ctx and stop', T, async () => {
    const info = await ollama.show({ model: 'fim' });
    assert.ok(info.template.includes('.Suffix'), `template: ${info.template}`);
    assert.match(info.parameters, /(^|\n)num_ctx \d+/);
    assert.match(info.parameters, /(^|\n)stop "/);
    assert.ok(info.capabilities.includes('insert'), `capabilities: ${info.capabilities}`);
    assert.equal(info.model_info['qwen2.embedding_length'], 64);
  });

  test('show() of stories: no .Suffix in the template', { ...T, skip: SKIP_STORIES }, async () => {
    const info = await ollama.show({ model: 'stories' });
    assert.ok(!info.template.includes('.Suffix'), `template: ${info.template}`);
    assert.match(info.parameters, /(^|\n)num_ctx \d+/);
    assert.match(info.parameters, /(^|\n)stop "/);
    assert.ok(!info.capabilities.includes('insert'));
  });

  test('version()', T, async () => {
    const { version } = await ollama.version();
    assert.match(version, /^\d+\.\d+\.\d+/);
  });
});

describe('ollama-js: generate', () => {
  test('non-stream greedy golden text (stories)', { ...T, skip: SKIP_STORIES }, async () => {
    const r = await ollama.generate({
      model: 'stories', prompt: STORIES_PROMPT, raw: true, stream: false, options: { temperature: 0, num_predict: 11 },
    });
    assert.equal(r.response, STORIES_GOLDEN);
    assert.equal(r.done, true);
    assert.equal(r.done_reason, 'length');
    assert.equal(r.eval_count, 11);
    assert.ok(Array.isArray(r.context) && r.context.length > 11);
  });

  test('stream greedy golden text (stories)', { ...T, skip: SKIP_STORIES }, async () => {
    const stream = await ollama.generate({
      model: 'stories', prompt: STORIES_PROMPT, raw: true, stream: true, options: { temperature: 0, num_predict: 11 },
    });
    let text = '';
    let last;
    let parts = 0;
    for await (const part of stream) {
      text += part.response;
      last = part;
      if (!part.done) parts++;
    }
    assert.equal(text, STORIES_GOLDEN);
    assert.equal(last.done, true);
    assert.equal(last.eval_count, 11);
    assert.equal(parts, 11);
  });

  test('non-stream and stream on the FIM model', T, async () => {
    const r = await ollama.generate({
      model: 'fim', prompt: 'def fib(n):', stream: false, options: { temperature: 0, num_predict: 8 },
    });
    assert.equal(r.done, true);
    assert.equal(typeof r.response, 'string');
    assert.ok(r.eval_count >= 1 && r.eval_count <= 8, `eval_count ${r.eval_count}`);
    const stream = await ollama.generate({
      model: 'fim', prompt: 'def fib(n):', stream: true, options: { temperature: 0, num_predict: 8 },
    });
    let last;
    for await (const part of stream) last = part;
    assert.equal(last.done, true);
    assert.ok(last.eval_count >= 1 && last.eval_count <= 8);
  });

  test('format: a JSON schema gives parseable JSON matching it', T, async () => {
    const r = await ollama.generate({
      model: 'fim', prompt: 'Pick a color.', format: COLOR_SCHEMA, stream: false,
      options: { temperature: 0, num_predict: 400 },
    });
    assert.equal(r.done_reason, 'stop', `the JSON did not finish: ${JSON.stringify(r.response)}`);
    const value = JSON.parse(r.response);
    assert.deepEqual(Object.keys(value), ['color']);
    assert.ok(COLOR_SCHEMA.properties.color.enum.includes(value.color));
  });

  test('format: an object schema with the trained model', { ...T, skip: SKIP_STORIES }, async () => {
    const schema = {
      type: 'object',
      properties: { name: { type: 'string' }, age: { type: 'integer' } },
      required: ['name', 'age'],
    };
    const r = await ollama.generate({
      model: 'stories', prompt: STORIES_PROMPT, format: schema, stream: false, options: { temperature: 0, num_predict: 300 },
    });
    const value = JSON.parse(r.response);
    assert.equal(typeof value.name, 'string');
    assert.ok(Number.isInteger(value.age));
  });

  test('unknown model throws ResponseError 404, then the server still serves', T, async () => {
    await assert.rejects(
      ollama.generate({ model: 'no-such-model', prompt: 'hi', stream: false }),
      (err) => {
        assert.equal(err.name, 'ResponseError');
        assert.equal(err.status_code, 404);
        assert.match(err.message, /no-such-model/);
        return true;
      },
    );
    await assert.rejects(ollama.show({ model: 'no-such-model' }), (err) => err.status_code === 404);
    const r = await ollama.generate({ model: 'fim', prompt: 'x', stream: false, options: { num_predict: 1 } });
    assert.equal(r.done, true);
  });
});

describe('ollama-js: chat, embed, ps', () => {
  test('chat non-stream and stream', T, async () => {
    const messages = [{ role: 'system', content: 'You write code.' }, { role: 'user', content: 'Write hello world.' }];
    const r = await ollama.chat({ model: 'fim', messages, stream: false, options: { temperature: 0, num_predict: 8 } });
    assert.equal(r.message.role, 'assistant');
    assert.equal(typeof r.message.content, 'string');
    assert.equal(r.done, true);
    assert.ok(r.eval_count >= 1 && r.eval_count <= 8);
    assert.ok(r.prompt_eval_count > 5);
    const stream = await ollama.chat({ model: 'fim', messages, stream: true, options: { temperature: 0, num_predict: 8 } });
    let last;
    let chunks = 0;
    for await (const part of stream) {
      assert.equal(part.message.role, 'assistant');
      last = part;
      chunks++;
    }
    assert.ok(chunks >= 2);
    assert.equal(last.done, true);
  });

  test('chat stream text equals non-stream text (stories, greedy)', { ...T, skip: SKIP_STORIES }, async () => {
    const messages = [{ role: 'user', content: 'Tell me a story.' }];
    const options = { temperature: 0, num_predict: 20 };
    const whole = await ollama.chat({ model: 'stories', messages, stream: false, options });
    let text = '';
    for await (const part of await ollama.chat({ model: 'stories', messages, stream: true, options })) {
      text += part.message.content;
    }
    assert.ok(whole.message.content.length > 0);
    assert.equal(text, whole.message.content);
  });

  test('embed(): one unit vector of n_embd per input', T, async () => {
    const info = await ollama.show({ model: 'fim' });
    const nEmbd = info.model_info['qwen2.embedding_length'];
    const r = await ollama.embed({ model: 'fim', input: ['def main():', 'hello world'] });
    assert.equal(r.embeddings.length, 2);
    for (const v of r.embeddings) {
      assert.equal(v.length, nEmbd);
      assert.ok(Math.abs(l2norm(v) - 1) < 1e-3, `norm ${l2norm(v)}`);
    }
    assert.notDeepEqual(r.embeddings[0], r.embeddings[1]);
    const single = await ollama.embed({ model: 'fim', input: 'def main():' });
    assert.equal(single.embeddings.length, 1);
    for (let i = 0; i < nEmbd; i++) assert.ok(Math.abs(single.embeddings[0][i] - r.embeddings[0][i]) < 1e-4);
  });

  test('ps() shows the loaded model', T, async () => {
    await ollama.generate({ model: 'fim', prompt: 'x', stream: false, options: { num_predict: 1 } });
    const { models } = await ollama.ps();
    const fim = models.find((m) => m.name === 'fim:latest');
    assert.ok(fim, `ps: ${JSON.stringify(models)}`);
    assert.ok(fim.size > 0);
    assert.ok(!Number.isNaN(Date.parse(fim.expires_at)));
  });
});
