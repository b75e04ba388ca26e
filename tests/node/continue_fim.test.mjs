// Continue.dev's Ollama provider against the FIM model, request by request:
// /api/show (does the template have .Suffix? then it uses FIM), /api/generate with a
// suffix and raw:true for autocomplete, /api/chat for the chat panel.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ndjsonLines, postJson, request, startServer, tinyModel } from './helpers.mjs';

const T = { timeout: 60000 };
let server;

before(async () => {
  server = await startServer({ models: [`qwen2.5-coder:1.5b-base=${tinyModel()}`] });
});
after(async () => {
  await server?.stop();
});

const MODEL = 'qwen2.5-coder:1.5b-base';

test('Continue: /api/show, then FIM autocomplete over /api/generate, then /api/chat', T, async () => {
  // 1. Continue asks for the model's template (it sends {name}) to decide on FIM.
  const show = await postJson(`${server.url}/api/show`, { name: MODEL });
  assert.equal(show.status, 200, show.text);
  assert.ok(show.body.template.includes('.Suffix'), `template: ${show.body.template}`);
  assert.match(show.body.parameters, /num_ctx/);

  // 2. Autocomplete: raw FIM with Continue's options.
  const gen = await request(`${server.url}/api/generate`, {
    body: {
      model: MODEL,
      prompt: 'def add(a, b):\n    return ',
      suffix: '\n\nprint(add(1, 2))\n',
      raw: true,
      stream: true,
      keep_alive: 1800,
      options: {
        num_predict: 16, temperature: 0, top_p: 0.95, top_k: 40, num_ctx: 4096,
        stop: ['<fim_prefix>', '<fim_suffix>', '<fim_middle>', '<file_sep>', '<|endoftext|>', '\n\n\n'],
      },
    },
  });
  assert.equal(gen.status, 200, gen.text);
  assert.match(gen.headers.get('content-type'), /^application\/x-ndjson/);
  const lines = ndjsonLines(gen.text).map((l) => JSON.parse(l));
  assert.ok(lines.length >= 1);
  const last = lines[lines.length - 1];
  assert.equal(last.done, true);
  for (const l of lines.slice(0, -1)) {
    assert.equal(l.done, false);
    assert.equal(typeof l.response, 'string');
  }
  assert.ok(last.eval_count >= 1 && last.eval_count <= 16, `eval_count ${last.eval_count}`);
  assert.ok(['stop', 'length'].includes(last.done_reason));
  const completion = lines.map((l) => l.response).join('');
  for (const fimToken of ['<fim_prefix>', '<fim_suffix>', '<fim_middle>']) {
    assert.ok(!completion.includes(fimToken), `completion leaks ${fimToken}: ${JSON.stringify(completion)}`);
  }

  // 3. The chat panel.
  const chat = await request(`${server.url}/api/chat`, {
    body: {
      model: MODEL, stream: true, keep_alive: 1800,
      messages: [{ role: 'system', content: 'You are a coding assistant.' }, { role: 'user', content: 'Explain add().' }],
      options: { num_predict: 16, temperature: 0, num_ctx: 4096 },
    },
  });
  assert.equal(chat.status, 200, chat.text);
  const chatLines = ndjsonLines(chat.text).map((l) => JSON.parse(l));
  assert.equal(chatLines[chatLines.length - 1].done, true);
  for (const l of chatLines) assert.equal(l.message.role, 'assistant');
});

test('Continue: the same FIM request non-streamed gives the same text (greedy)', T, async () => {
  const body = {
    model: MODEL, prompt: 'import os\n\ndef main():\n    ', suffix: '\n\nif __name__ == "__main__":\n    main()\n',
    raw: true, options: { num_predict: 12, temperature: 0 },
  };
  const streamed = await request(`${server.url}/api/generate`, { body: { ...body, stream: true } });
  const whole = await request(`${server.url}/api/generate`, { body: { ...body, stream: false } });
  assert.equal(whole.status, 200, whole.text);
  const text = ndjsonLines(streamed.text).map((l) => JSON.parse(l).response).join('');
  assert.equal(text, whole.body.response);
  assert.equal(whole.body.done, true);
});
