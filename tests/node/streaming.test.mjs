// Stream framing seen with plain fetch: Ollama NDJSON, OpenAI SSE, llama.cpp SSE.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  HAVE_STORIES, STORIES_GOLDEN, STORIES_PROMPT, ndjsonLines, request, sseEvents, standardModels, startServer,
} from './helpers.mjs';

const T = { timeout: 60000 };
let server;

before(async () => {
  server = await startServer({ models: standardModels() });
});
after(async () => {
  await server?.stop();
});

const MODEL = HAVE_STORIES ? 'stories' : 'fim';
const PROMPT = HAVE_STORIES ? STORIES_PROMPT : 'def main():';

function assertOllamaFinal(last) {
  assert.equal(last.done, true);
  for (const k of ['total_duration', 'load_duration', 'prompt_eval_count', 'prompt_eval_duration', 'eval_count', 'eval_duration']) {
    assert.ok(Number.isInteger(last[k]) && last[k] >= 0, `${k} = ${last[k]}`);
  }
  assert.ok(last.eval_count >= 1);
  assert.ok(last.prompt_eval_count >= 1);
  assert.ok(last.total_duration >= last.eval_duration);
  assert.ok(!Number.isNaN(Date.parse(last.created_at)));
}

// Reads a streamed body, recording what arrived in each network read.
async function readAll(res) {
  const decoder = new TextDecoder();
  let text = '';
  let reads = 0;
  for await (const chunk of res.body) {
    text += decoder.decode(chunk, { stream: true });
    reads++;
  }
  return { text, reads };
}

describe('NDJSON (Ollama)', () => {
  test('/api/generate stream: complete JSON lines, final stats, content-type, route header', T, async () => {
    const res = await fetch(`${server.url}/api/generate`, {
      method: 'POST',
      body: JSON.stringify({ model: MODEL, prompt: PROMPT, raw: true, options: { temperature: 0, num_predict: 11 } }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/x-ndjson/);
    assert.equal(res.headers.get('x-hearth-route'), 'local');
    const { text } = await readAll(res);
    assert.ok(text.endsWith('\n'), 'the stream ends with a newline');
    const lines = ndjsonLines(text);
    const objects = lines.map((l, i) => {
      assert.ok(l.length > 0, `empty line ${i}`);
      const o = JSON.parse(l);  // every line is one complete JSON object
      assert.equal(typeof o, 'object');
      return o;
    });
    const last = objects[objects.length - 1];
    assertOllamaFinal(last);
    assert.equal(last.response, '');
    const chunks = objects.slice(0, -1);
    for (const c of chunks) {
      assert.equal(c.done, false);
      assert.equal(c.model, MODEL);
      assert.equal(typeof c.response, 'string');
    }
    // Every streamed chunk is at least one token; the trained model has one per token.
    assert.ok(chunks.length >= 1 && chunks.length <= last.eval_count, `${chunks.length} chunks, eval_count ${last.eval_count}`);
    if (HAVE_STORIES) {
      assert.equal(chunks.length, last.eval_count);
      assert.equal(chunks.map((c) => c.response).join(''), STORIES_GOLDEN);
    }
  });

  test('/api/chat stream: complete JSON lines and final stats', T, async () => {
    const res = await fetch(`${server.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'fim', messages: [{ role: 'user', content: 'hi' }], options: { temperature: 0, num_predict: 8 } }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/x-ndjson/);
    assert.equal(res.headers.get('x-hearth-route'), 'local');
    const objects = ndjsonLines((await readAll(res)).text).map((l) => JSON.parse(l));
    const last = objects[objects.length - 1];
    assertOllamaFinal(last);
    assert.equal(last.message.role, 'assistant');
    for (const c of objects.slice(0, -1)) assert.equal(c.done, false);
  });

  test('non-stream responses carry X-Hearth-Route too', T, async () => {
    const g = await request(`${server.url}/api/generate`, {
      body: { model: 'fim', prompt: 'x', stream: false, options: { num_predict: 2 } },
    });
    assert.equal(g.status, 200);
    assert.match(g.headers.get('content-type'), /^application\/json/);
    assert.equal(g.headers.get('x-hearth-route'), 'local');
    assertOllamaFinal(g.body);
    const c = await request(`${server.url}/v1/chat/completions`, {
      body: { model: 'fim', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 },
    });
    assert.equal(c.headers.get('x-hearth-route'), 'local');
    const l = await request(`${server.url}/completion`, { body: { model: 'fim', prompt: 'x', n_predict: 2 } });
    assert.equal(l.headers.get('x-hearth-route'), 'local');
  });
});

// SSE events: "data: ..." lines, events separated by a blank line.
function parseSse(text) {
  assert.ok(text.endsWith('\n\n'), 'the stream ends with a blank line');
  return sseEvents(text).map((e) => {
    assert.ok(e.startsWith('data: '), `not a data event: ${JSON.stringify(e)}`);
    assert.ok(!e.includes('\n'), `multi-line event: ${JSON.stringify(e)}`);
    return e.slice('data: '.length);
  });
}

describe('SSE (OpenAI)', () => {
  test('/v1/chat/completions stream: data events, blank lines, final [DONE]', T, async () => {
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'fim', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8, stream: true, temperature: 0 }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    assert.equal(res.headers.get('x-hearth-route'), 'local');
    const data = parseSse((await readAll(res)).text);
    assert.equal(data[data.length - 1], '[DONE]');
    const events = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.ok(events.length >= 2);
    for (const e of events) assert.equal(e.object, 'chat.completion.chunk');
    assert.ok(['stop', 'length'].includes(events[events.length - 1].choices[0].finish_reason));
    for (const e of events.slice(0, -1)) assert.equal(e.choices[0].finish_reason, null);
    assert.ok(!data.slice(0, -1).includes('[DONE]'));
  });

  test('/v1/completions stream: data events and final [DONE]', T, async () => {
    const res = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: PROMPT, max_tokens: 11, stream: true, temperature: 0 }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const data = parseSse((await readAll(res)).text);
    assert.equal(data[data.length - 1], '[DONE]');
    const events = data.slice(0, -1).map((d) => JSON.parse(d));
    for (const e of events) assert.equal(e.object, 'text_completion');
    const text = events.map((e) => e.choices[0].text).join('');
    if (HAVE_STORIES) assert.equal(text, STORIES_GOLDEN);
    const finish = events[events.length - 1].choices[0].finish_reason;
    if (HAVE_STORIES) assert.equal(finish, 'length');
    else assert.ok(['stop', 'length'].includes(finish), finish);
  });
});

describe('SSE (llama.cpp)', () => {
  test('/completion stream ends with stop:true and timings', T, async () => {
    const res = await fetch(`${server.url}/completion`, {
      method: 'POST',
      body: JSON.stringify({ model: MODEL, prompt: PROMPT, n_predict: 11, temperature: 0, stream: true }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    assert.equal(res.headers.get('x-hearth-route'), 'local');
    const events = parseSse((await readAll(res)).text).map((d) => JSON.parse(d));
    const last = events[events.length - 1];
    assert.equal(last.stop, true);
    assert.equal(typeof last.timings, 'object');
    assert.equal(last.timings.predicted_n, 11);
    assert.ok(last.timings.prompt_n + last.timings.cache_n >= 1);
    assert.equal(last.tokens_predicted, 11);
    assert.equal(last.stop_type, 'limit');
    const chunks = events.slice(0, -1);
    for (const c of chunks) {
      assert.equal(c.stop, false);
      assert.equal(typeof c.content, 'string');
    }
    if (HAVE_STORIES) assert.equal(chunks.map((c) => c.content).join(''), STORIES_GOLDEN);
  });
});
