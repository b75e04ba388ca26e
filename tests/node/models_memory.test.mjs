// Stored models over HTTP with the real `ollama` client: Modelfile PARAMETER and SYSTEM
// applied to requests (the request's own options win), /api/ps and `hearth ps` showing each
// model's real footprint, the memory limit refusing a load with the numbers (507) while the
// server keeps serving, and /api/delete making the name unservable at once.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Ollama } from 'ollama';
import { makeTempDir, request, runHearth, startServer, tinyModel } from './helpers.mjs';

const T = { timeout: 120000 };

describe('stored models: Modelfile defaults, ps, delete', () => {
  let server;
  let ollama;
  let env;

  before(async () => {
    const store = makeTempDir();
    env = { HEARTH_MODELS: store };
    let r = runHearth(['import', tinyModel(), '--name', 'tiny'], { env });
    assert.equal(r.status, 0, r.stderr);
    const modelfile = path.join(store, 'Modelfile');
    writeFileSync(modelfile, 'FROM tiny\nPARAMETER num_predict 3\nPARAMETER temperature 0\nSYSTEM "You are terse."\n');
    r = runHearth(['create', 'tiny-terse', '-f', modelfile], { env });
    assert.equal(r.status, 0, r.stderr);
    r = runHearth(['dev', 'gen-lora', '--out', path.join(store, 'lora.gguf')]);
    assert.equal(r.status, 0, r.stderr);
    writeFileSync(path.join(store, 'Modelfile.lora'), 'FROM tiny\nADAPTER ./lora.gguf\n');
    r = runHearth(['create', 'tiny-lora', '-f', path.join(store, 'Modelfile.lora')], { env });
    assert.equal(r.status, 0, r.stderr);
    server = await startServer({ env, args: ['--ctx', '512', '--parallel', '2'] });
    ollama = new Ollama({ host: server.url });
  });
  after(async () => { await server?.stop(); });

  test('PARAMETER num_predict applies unless the request sets its own', T, async () => {
    const byDefault = await ollama.generate({ model: 'tiny-terse', prompt: 'def f():', stream: false });
    assert.equal(byDefault.eval_count, 3);
    const own = await ollama.generate({ model: 'tiny-terse', prompt: 'def f():', stream: false, options: { num_predict: 6 } });
    assert.equal(own.eval_count, 6);
    const plain = await ollama.generate({ model: 'tiny', prompt: 'def f():', stream: false, options: { num_predict: 5 } });
    assert.equal(plain.eval_count, 5, 'the FROM model keeps its own (empty) defaults');
  });

  test('PARAMETER temperature 0 makes output deterministic without request options', T, async () => {
    const a = await ollama.generate({ model: 'tiny-terse', prompt: 'import os', stream: false });
    const b = await ollama.generate({ model: 'tiny-terse', prompt: 'import os', stream: false });
    assert.equal(a.response, b.response);
  });

  test('SYSTEM is in the prompt unless the conversation has its own system message', T, async () => {
    const withDefault = await ollama.chat({ model: 'tiny-terse', messages: [{ role: 'user', content: 'hi' }], stream: false });
    const bare = await ollama.chat({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], stream: false, options: { num_predict: 3 } });
    assert.ok(withDefault.prompt_eval_count > bare.prompt_eval_count,
      `system prompt adds tokens: ${withDefault.prompt_eval_count} vs ${bare.prompt_eval_count}`);
    const own = await ollama.chat({
      model: 'tiny-terse', stream: false,
      messages: [{ role: 'system', content: 'x' }, { role: 'user', content: 'hi' }],
    });
    assert.ok(own.prompt_eval_count < withDefault.prompt_eval_count, 'the request\'s system message replaces the default');
  });

  test('ADAPTER: the LoRA adapter changes what the model generates', T, async () => {
    const options = { temperature: 0, num_predict: 12 };
    const base = await ollama.generate({ model: 'tiny', prompt: 'def main():', stream: false, options });
    const adapted = await ollama.generate({ model: 'tiny-lora', prompt: 'def main():', stream: false, options });
    assert.notEqual(adapted.response, base.response);
    const again = await ollama.generate({ model: 'tiny-lora', prompt: 'def main():', stream: false, options });
    assert.equal(again.response, adapted.response);
    const show = runHearth(['show', 'tiny-lora'], { env });
    assert.match(show.stdout, /Adapters \(LoRA, applied to every request\)/);
  });

  test('/api/ps and `hearth ps` show the real footprint of each loaded model', T, async () => {
    await ollama.generate({ model: 'tiny', prompt: 'x', stream: false, options: { num_predict: 1 } });
    const { models } = await ollama.ps();
    const tiny = models.find((m) => m.name === 'tiny:latest');
    assert.ok(tiny, JSON.stringify(models));
    const h = tiny.hearth;
    assert.ok(h.weights > 0 && h.kv_cache > 0 && h.compute > 0, JSON.stringify(h));
    assert.equal(tiny.size, h.weights + h.kv_cache + h.compute + h.other);
    assert.equal(tiny.size_vram, 0);
    assert.equal(tiny.context_length, 512);
    assert.equal(h.parallel, 2);
    const r = runHearth(['ps', '--url', server.url], { env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /NAME\s+SIZE\s+WEIGHTS\s+KV CACHE/);
    assert.match(r.stdout, /tiny:latest\s+\d+ MiB/);
  });

  test('/api/delete makes the name unservable at once', T, async () => {
    const copy = await request(`${server.url}/api/copy`, { body: { source: 'tiny-terse', destination: 'gone' } });
    assert.equal(copy.status, 200, copy.text);
    await ollama.generate({ model: 'gone', prompt: 'x', stream: false });
    const del = await request(`${server.url}/api/delete`, { method: 'DELETE', body: { model: 'gone' } });
    assert.equal(del.status, 200, del.text);
    const { models } = await ollama.list();
    assert.ok(!models.some((m) => m.name === 'gone:latest'), JSON.stringify(models));
    const after = await request(`${server.url}/api/generate`, { body: { model: 'gone', prompt: 'x', stream: false } });
    assert.equal(after.status, 404, after.text);
  });
});

describe('memory limit', () => {
  let server;
  before(async () => {
    server = await startServer({ models: [`tiny=${tinyModel()}`], args: ['--memory-limit', '1MiB'] });
  });
  after(async () => { await server?.stop(); });

  test('a model that does not fit is refused with the numbers, and the server keeps serving', T, async () => {
    const r = await request(`${server.url}/api/generate`, { body: { model: 'tiny', prompt: 'x', stream: false } });
    assert.equal(r.status, 507, r.text);
    assert.match(r.body.error, /not enough memory to load model 'tiny:latest'/);
    assert.match(r.body.error, /weights [\d.]+ (B|MiB|GiB), KV cache [\d.]+ (B|MiB|GiB)/);
    assert.match(r.body.error, /memory limit is 1\.0 MiB/);
    const v1 = await request(`${server.url}/v1/chat/completions`, {
      body: { model: 'tiny', messages: [{ role: 'user', content: 'x' }] },
    });
    assert.equal(v1.status, 507);
    assert.match(v1.body.error.message, /not enough memory/);
    const tags = await request(`${server.url}/api/tags`);
    assert.equal(tags.status, 200);
  });
});
