// Tool calling through the real `openai` and `ollama` npm clients.
//
// The model has random weights and Qwen2.5-Instruct's chat template (bundled with
// llama.cpp). It never chooses a tool by itself, so calls are forced with tool_choice
// "required" or a named function; the strict grammar then makes the call well-formed, and
// the enum-only schema keeps it short.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';
import OpenAI, { BadRequestError } from 'openai';

import { makeTempDir, runHearth, startServer, tinyModel } from './helpers.mjs';

const T = { timeout: 60000 };
let server;
let openai;
let ollama;

const UNIT_SCHEMA = {
  type: 'object',
  properties: { unit: { type: 'string', enum: ['c', 'f'] } },
  required: ['unit'],
  additionalProperties: false,
};
const WEATHER = {
  type: 'function',
  function: { name: 'get_weather', description: 'Current temperature in the user\'s city', parameters: UNIT_SCHEMA },
};
const ASK = [{ role: 'user', content: 'What is the weather?' }];

function toolModel() {
  const out = `${makeTempDir()}/tools.gguf`;
  const r = runHearth(['dev', 'gen-model', '--shape', 'tiny', '--vocab', 'qwen2',
    '--chat-template-file', 'Qwen-Qwen2.5-7B-Instruct', '--out', out], { timeoutMs: 120000 });
  if (r.status !== 0) throw new Error(`hearth dev gen-model failed (${r.status}): ${r.stderr}`);
  return out;
}

function assertWeatherArguments(args) {
  assert.deepEqual(Object.keys(args), ['unit']);
  assert.ok(['c', 'f'].includes(args.unit), `unit: ${args.unit}`);
}

before(async () => {
  server = await startServer({ models: [`tools=${toolModel()}`, `chatml=${tinyModel()}`] });
  openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 60000 });
  ollama = new Ollama({ host: server.url });
});
after(async () => {
  await server?.stop();
});

describe('openai-node: tools', () => {
  test('tool_choice "required": a parseable call, finish_reason tool_calls', T, async () => {
    const r = await openai.chat.completions.create({
      model: 'tools', messages: ASK, tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false,
      temperature: 0, max_tokens: 120,
    });
    const choice = r.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.tool_calls.length, 1);
    const call = choice.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.match(call.id, /^call_/);
    assert.equal(call.function.name, 'get_weather');
    assertWeatherArguments(JSON.parse(call.function.arguments));
  });

  test('a follow-up with the call and its result renders and answers', T, async () => {
    const first = await openai.chat.completions.create({
      model: 'tools', messages: ASK, tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'get_weather' } },
      parallel_tool_calls: false, temperature: 0, max_tokens: 120,
    });
    const assistant = first.choices[0].message;
    assert.equal(assistant.tool_calls?.length, 1);
    const r = await openai.chat.completions.create({
      model: 'tools', tools: [WEATHER], temperature: 0, max_tokens: 8,
      messages: [...ASK, assistant, { role: 'tool', tool_call_id: assistant.tool_calls[0].id, content: '21 degrees' }],
    });
    assert.ok(['stop', 'length', 'tool_calls'].includes(r.choices[0].finish_reason));
    assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens >= 1);
  });

  test('tool_choice "none": plain content', T, async () => {
    const r = await openai.chat.completions.create({
      model: 'tools', messages: ASK, tools: [WEATHER], tool_choice: 'none', temperature: 0, max_tokens: 8,
    });
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.equal(r.choices[0].message.tool_calls, undefined);
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  });

  test('streaming: tool_calls deltas, then finish_reason tool_calls', T, async () => {
    const stream = await openai.chat.completions.create({
      model: 'tools', messages: ASK, tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false,
      temperature: 0, max_tokens: 120, stream: true,
    });
    const calls = [];
    let finish = null;
    let content = '';
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      content += c.delta.content ?? '';
      for (const d of c.delta.tool_calls ?? []) {
        calls[d.index] ??= { id: '', name: '', arguments: '' };
        calls[d.index].id += d.id ?? '';
        calls[d.index].name += d.function?.name ?? '';
        calls[d.index].arguments += d.function?.arguments ?? '';
      }
      finish = c.finish_reason ?? finish;
    }
    assert.equal(finish, 'tool_calls');
    assert.equal(calls.length, 1);
    assert.equal(calls[0].name, 'get_weather');
    assertWeatherArguments(JSON.parse(calls[0].arguments));
    assert.ok(!content.includes('<tool_call>'), `the call leaked into content: ${content}`);
  });

  test('bad tools shapes are 400s naming the field', T, async () => {
    const bad = [
      [{ tools: [{ type: 'retrieval' }] }, /tools\[0\]\.type/],
      [{ tools: [{ type: 'function', function: { description: 'no name' } }] }, /tools\[0\]\.function\.name/],
      [{ tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'other' } } }, /'other'/],
      [{ tools: [WEATHER], tool_choice: 'always' }, /tool_choice/],
    ];
    for (const [extra, message] of bad) {
      await assert.rejects(
        openai.chat.completions.create({ model: 'tools', messages: ASK, max_tokens: 4, ...extra }),
        (e) => e instanceof BadRequestError && message.test(e.message),
        JSON.stringify(extra));
    }
  });

  test('a model whose template cannot call tools: 400 that says so', T, async () => {
    await assert.rejects(
      openai.chat.completions.create({ model: 'chatml', messages: ASK, tools: [WEATHER], max_tokens: 4 }),
      (e) => e instanceof BadRequestError && /cannot call tools/.test(e.message) && /tool-capable/.test(e.message));
  });
});

describe('ollama-js: tools', () => {
  test('chat() with tools: tool_calls with arguments as an object', T, async () => {
    // tool_choice and parallel_tool_calls are hearth's extensions of Ollama's API (the
    // client passes them through).
    const r = await ollama.chat({
      model: 'tools', messages: ASK, tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false,
      stream: false, options: { temperature: 0, num_predict: 120 },
    });
    assert.equal(r.done, true);
    assert.equal(r.message.tool_calls?.length, 1, JSON.stringify(r.message));
    for (const call of r.message.tool_calls) {
      assert.equal(call.function.name, 'get_weather');
      assertWeatherArguments(call.function.arguments);
    }
  });

  test('streamed chat(): the tool calls arrive in a chunk, then done', T, async () => {
    const stream = await ollama.chat({
      model: 'tools', messages: ASK, tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false,
      stream: true, options: { temperature: 0, num_predict: 120 },
    });
    const calls = [];
    let done = false;
    for await (const part of stream) {
      calls.push(...(part.message.tool_calls ?? []));
      done = part.done || done;
    }
    assert.ok(done);
    assert.equal(calls.length, 1);
    assertWeatherArguments(calls[0].function.arguments);
  });

  test('a follow-up with tool_calls and a tool message answers', T, async () => {
    const r = await ollama.chat({
      model: 'tools', tools: [WEATHER], stream: false, options: { temperature: 0, num_predict: 8 },
      messages: [
        ...ASK,
        { role: 'assistant', content: '', tool_calls: [{ function: { name: 'get_weather', arguments: { unit: 'c' } } }] },
        { role: 'tool', content: '21 degrees', tool_name: 'get_weather' },
      ],
    });
    assert.equal(r.done, true);
    assert.ok(r.eval_count >= 1);
  });

  test('show(): the tool model has the tools capability, ChatML does not', T, async () => {
    assert.ok((await ollama.show({ model: 'tools' })).capabilities.includes('tools'));
    assert.ok(!(await ollama.show({ model: 'chatml' })).capabilities.includes('tools'));
  });
});
