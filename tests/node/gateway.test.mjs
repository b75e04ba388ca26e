// The privacy gateway end to end: hearth serve with a policy pointing at a fake cloud
// provider (tests/fake_cloud/server.mjs) that records every byte it receives.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import {
  REPO_ROOT, STORIES_MODEL, SKIP_STORIES, HAVE_STORIES, makeTempDir, startServer, postJson, request, runHearth,
} from './helpers.mjs';

const FAKE_KEY = 'fake-key-0123456789';
const AWS_KEY = 'AKIAIOSFODNN7EXAMPLE';
const GITHUB_TOKEN = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
const EMAIL = 'jane.doe@example-hospital.org';

let fake;        // {port, url, proc}
let hearth;      // server handle
let dir;
let auditDb;

async function startFake() {
  const proc = spawn(process.execPath, [path.join(REPO_ROOT, 'tests/fake_cloud/server.mjs'), '--watch-stdin'],
    { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)).port);
    });
    proc.once('exit', (code) => reject(new Error(`fake cloud exited ${code}`)));
  });
  return { port, url: `http://127.0.0.1:${port}`, proc };
}

const control = (body) => postJson(`${fake.url}/_control`, body);
const received = async () => (await request(`${fake.url}/_received`)).body;

function policyYaml(port) {
  return `version: 1
crossover_tokens: 100
approval_timeout_seconds: 2
egress:
  allow: ["127.0.0.1:${port}"]
backends:
  - name: fake
    type: openai
    url: http://127.0.0.1:${port}/v1
    model: fake-gpt
    api_key_env: HEARTH_TEST_FAKE_KEY
    max_retries: 1
    breaker_failures: 2
    breaker_open_seconds: 4
    read_timeout_ms: 3000
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2
  - name: claude
    type: anthropic
    url: http://127.0.0.1:${port}/v1
    model: fake-claude
    api_key_env: HEARTH_TEST_FAKE_KEY
scanner:
  sensitive_paths: ["data/patients/**"]
rules:
  - {name: private, when: {sensitivity: [private]}, action: local}
  - {name: redact-all, when: {project: [redact]}, action: redact-then-cloud, backend: fake}
  - {name: ask-first, when: {project: [ask]}, action: cloud, backend: fake, approval: interactive, remember_minutes: 0}
  - {name: say-yes, when: {project: [header]}, action: cloud, backend: fake, approval: header}
  - {name: to-claude, when: {project: [claude]}, action: cloud, backend: claude}
  - {name: no-gpt, when: {model: ["forbidden-*"]}, action: deny}
  - {name: long, when: {output_tokens: {over_crossover: true}}, action: cloud, backend: fake}
default: local
`;
}

const chat = (content, { max_tokens = 400, project = '', headers = {}, model = 'stories260K', stream = false } = {}) =>
  postJson(`${hearth.url}/v1/chat/completions`, {
    model, max_tokens, stream, messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content }],
  }, { headers: { 'X-Hearth-Project': project, ...headers } });

before(async () => {
  if (!HAVE_STORIES) return;
  fake = await startFake();
  dir = makeTempDir();
  const policy = path.join(dir, 'hearth.yaml');
  writeFileSync(policy, policyYaml(fake.port));
  auditDb = path.join(dir, 'audit.db');
  hearth = await startServer({
    models: [`stories260K=${STORIES_MODEL}`],
    args: ['--policy', policy, '--audit-db', auditDb],
    env: { HEARTH_TEST_FAKE_KEY: FAKE_KEY },
  });
});

after(async () => {
  if (hearth) await hearth.stop();
  if (fake) fake.proc.kill();
});

test('a long answer goes to the cloud with secrets redacted, and they come back restored', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  const secretText = `deploy with ${AWS_KEY} and token ${GITHUB_TOKEN}; explain the deploy script`;
  const r = await chat(secretText);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('x-hearth-route'), 'cloud');
  assert.equal(r.body.hearth_route, 'cloud');
  const got = await received();
  assert.equal(got.length, 1);
  assert.ok(!got[0].body.includes(AWS_KEY), 'the AWS key left the machine');
  assert.ok(!got[0].body.includes(GITHUB_TOKEN), 'the GitHub token left the machine');
  assert.match(got[0].body, /\[\[REDACTED_[A-Z_]+_1\]\]/);
  assert.ok(got[0].has_authorization, 'the key is sent as a header');
  // The fake echoes the (redacted) message; the user sees their own values again.
  assert.ok(r.body.choices[0].message.content.includes(AWS_KEY), r.body.choices[0].message.content);
  assert.ok(r.body.choices[0].message.content.includes(GITHUB_TOKEN));
});

test('streamed cloud answers restore placeholders split across chunks', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  await control({ chunk_chars: 2, fragment_bytes: 7 });
  const client = new OpenAI({ baseURL: `${hearth.url}/v1`, apiKey: 'unused' });
  const stream = await client.chat.completions.create({
    model: 'stories260K', max_tokens: 400, stream: true,
    messages: [{ role: 'user', content: `my key is ${AWS_KEY}, explain it` }],
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(text.includes(AWS_KEY), text);
  assert.ok(!(await received())[0].body.includes(AWS_KEY));
  await postJson(`${fake.url}/_reset`, {});
});

test('redact-then-cloud removes personal data too', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  const r = await chat(`patient contact ${EMAIL}, card 4111 1111 1111 1111`, { project: 'redact' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('x-hearth-route'), 'cloud');
  const body = (await received())[0].body;
  assert.ok(!body.includes(EMAIL), body);
  assert.ok(!body.includes('4111 1111 1111 1111'), body);
});

test('private requests and sensitive paths never leave', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  const priv = await chat('explain this long thing', { headers: { 'X-Hearth-Sensitivity': 'private' }, max_tokens: 8 });
  assert.equal(priv.status, 200, priv.text);
  assert.equal(priv.headers.get('x-hearth-route'), 'local');
  const paths = await chat('summarise data/patients/2024/cohort.csv for me', { max_tokens: 8 });
  assert.equal(paths.headers.get('x-hearth-route'), 'local');
  const header = await chat('summarise the cohort', { max_tokens: 8, headers: { 'X-Hearth-Paths': 'data/patients/x.csv' } });
  assert.equal(header.headers.get('x-hearth-route'), 'local');
  assert.equal((await received()).length, 0, 'nothing reached the cloud');
  // 8 output tokens are under the crossover; still local without any rule.
  const short = await chat('hi', { max_tokens: 8 });
  assert.equal(short.headers.get('x-hearth-route'), 'local');
  assert.equal((await received()).length, 0);
});

test('deny rules answer 403 and the server keeps serving', { skip: SKIP_STORIES }, async () => {
  const r = await chat('hello', { model: 'forbidden-model', max_tokens: 8 });
  assert.equal(r.status, 403, r.text);
  assert.match(r.body.error.message, /no-gpt/);
  assert.equal((await chat('hi', { max_tokens: 4 })).status, 200);
});

test('header approval: without it the request stays local; with it it may leave', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  const without = await chat('hello there', { project: 'header', max_tokens: 8 });
  assert.equal(without.headers.get('x-hearth-route'), 'local');
  const withHeader = await chat('hello there', { project: 'header', max_tokens: 8, headers: { 'X-Hearth-Approval': 'yes' } });
  assert.equal(withHeader.headers.get('x-hearth-route'), 'cloud');
  assert.equal((await received()).length, 1);
});

test('interactive approval blocks until approved by the CLI, and times out to local', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  const pending = chat('please approve me', { project: 'ask', max_tokens: 8 });
  let id;
  for (let i = 0; i < 50 && !id; i++) {
    const list = (await request(`${hearth.url}/hearth/approvals`)).body.approvals;
    if (list.length) id = list[0].id;
    else await new Promise((r) => setTimeout(r, 40));
  }
  assert.ok(id, 'the request appears in the approval queue');
  assert.equal((await received()).length, 0, 'nothing leaves before approval');
  const cli = spawnSync(process.env.HEARTH_BIN || hearth.proc.spawnfile, ['approve', id, '--url', hearth.url, '--by', 'tester'],
    { encoding: 'utf8', env: { ...process.env, HEARTH_API_KEY: '' } });
  assert.equal(cli.status, 0, cli.stderr);
  const r = await pending;
  assert.equal(r.headers.get('x-hearth-route'), 'cloud', r.text);
  assert.equal((await received()).length, 1);

  const t0 = Date.now();
  const timedOut = await chat('nobody answers', { project: 'ask', max_tokens: 8 });
  assert.ok(Date.now() - t0 >= 1900, 'waited for the approval timeout');
  assert.equal(timedOut.status, 200);
  assert.equal(timedOut.headers.get('x-hearth-route'), 'local');
  assert.equal((await received()).length, 1, 'the timed-out request never left');
});

test('anthropic backend receives the system prompt separately and the key as x-api-key', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  const r = await chat('hello claude', { project: 'claude', max_tokens: 50 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('x-hearth-route'), 'cloud');
  const got = (await received())[0];
  assert.match(got.path, /\/messages$/);
  assert.ok(got.has_x_api_key);
  const body = JSON.parse(got.body);
  assert.equal(body.system, 'You are terse.');
  assert.ok(body.messages.every((m) => m.role !== 'system'));
  assert.match(r.body.choices[0].message.content, /hello claude/);
});

test('failover: cloud errors fall back to local, the circuit opens, then closes again', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  await control({ fail_next: [503, 503, 503, 503] });
  // Just over the crossover (100), so the local fallback is quick and the circuit is still
  // open when the third request arrives.
  const first = await chat('explain failover', { max_tokens: 101 });
  assert.equal(first.status, 200, first.text);
  assert.equal(first.headers.get('x-hearth-route'), 'local', 'served locally after retries');
  const second = await chat('explain failover again', { max_tokens: 101 });
  assert.equal(second.headers.get('x-hearth-route'), 'local');
  const count = (await received()).length;
  assert.equal(count, 4, 'two requests x (1 try + 1 retry)');
  // The circuit is open now: no contact with the provider at all.
  const third = await chat('explain once more', { max_tokens: 101 });
  assert.equal(third.headers.get('x-hearth-route'), 'local');
  assert.equal((await received()).length, count);
  // After breaker_open_seconds the cloud is tried again and works.
  await new Promise((r) => setTimeout(r, 4200));
  await control({ fail_next: [] });
  const back = await chat('explain after recovery', {});
  assert.equal(back.headers.get('x-hearth-route'), 'cloud', back.text);
});

test('the audit log has a record per routed request and detects tampering', { skip: SKIP_STORIES }, async () => {
  const ok = runHearth(['audit', 'verify', '--db', auditDb]);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /chain intact/);
  const shown = runHearth(['audit', 'export', '--db', auditDb]);
  const records = shown.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(records.length >= 10, `only ${records.length} records`);
  const cloud = records.filter((r) => r.route === 'cloud');
  assert.ok(cloud.length >= 5);
  for (const r of cloud) {
    assert.ok(r.bytes_sent > 0 && /^[0-9a-f]{64}$/.test(r.sent_sha256), JSON.stringify(r));
    assert.ok(!JSON.stringify(r).includes(AWS_KEY), 'no secret in the audit log');
  }
  assert.ok(records.some((r) => r.approval === 'timeout-local'));
  assert.ok(records.some((r) => /unavailable|circuit/.test(r.notes)));
  assert.ok(records.some((r) => r.route === 'denied'));
  // Edit one record behind hearth's back.
  const py = spawnSync('python3', ['-c', `import sqlite3; c = sqlite3.connect("${auditDb}"); c.execute("drop trigger if exists records_append_only_update"); c.execute("update records set model = 'edited' where id = 3"); c.commit()`],
    { encoding: 'utf8' });
  assert.equal(py.status, 0, py.stderr);
  const bad = runHearth(['audit', 'verify', '--db', auditDb]);
  assert.equal(bad.status, 1);
  assert.match(bad.stdout + bad.stderr, /3/);
});

test('a cloud request in flight when hearth is killed is recorded as interrupted at the next start', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  await control({ tokens_per_second: 4 });  // a slow stream: hearth is killed in the middle of it
  const db = path.join(makeTempDir(), 'audit.db');
  const options = {
    models: [`stories260K=${STORIES_MODEL}`],
    args: ['--policy', path.join(dir, 'hearth.yaml'), '--audit-db', db],
    env: { HEARTH_TEST_FAKE_KEY: FAKE_KEY },
  };
  const first = await startServer(options);
  let got;
  try {
    const res = await fetch(`${first.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'stories260K', max_tokens: 400, stream: true,
        messages: [{ role: 'user', content: `explain ${AWS_KEY} in detail` }] }),
    });
    assert.equal(res.headers.get('x-hearth-route'), 'cloud');
    const reader = res.body.getReader();
    await reader.read();  // text is streaming: the request has left the machine
    first.proc.kill('SIGKILL');
    await first.exited;
    await reader.cancel().catch(() => {});
    got = await received();
  } finally {
    await postJson(`${fake.url}/_reset`, {});
  }
  const second = await startServer(options);
  await second.stop();
  assert.match(second.log(), /1 cloud request\(s\) were in flight when an earlier hearth stopped/);
  const shown = runHearth(['audit', 'export', '--db', db]);
  assert.equal(shown.status, 0, shown.stderr);
  const records = shown.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(records.length, 1, shown.stdout);
  const r = records[0];
  assert.equal(r.route, 'cloud');
  assert.match(r.status, /^interrupted/);
  assert.equal(r.backend, 'cloud:fake/fake-gpt');
  assert.equal(got.length, 1);
  assert.equal(r.sent_sha256, got[0].body_sha256, 'the record names exactly the bytes that left');
  assert.equal(r.bytes_sent, got[0].body_bytes);
  assert.ok(r.findings.some((f) => f.rule === 'aws_access_key_id'), JSON.stringify(r.findings));
  const ok = runHearth(['audit', 'verify', '--db', db]);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
});

test('store_prompts keeps what was sent (redacted) for cloud records and the request for local ones', { skip: SKIP_STORIES }, async () => {
  await postJson(`${fake.url}/_reset`, {});
  const own = makeTempDir();
  writeFileSync(path.join(own, 'hearth.yaml'), policyYaml(fake.port) + 'store_prompts: true\n');
  const db = path.join(own, 'audit.db');
  const server = await startServer({
    models: [`stories260K=${STORIES_MODEL}`],
    args: ['--policy', path.join(own, 'hearth.yaml'), '--audit-db', db],
    env: { HEARTH_TEST_FAKE_KEY: FAKE_KEY },
  });
  try {
    const ask = (content, headers = {}) => postJson(`${server.url}/v1/chat/completions`, {
      model: 'stories260K', max_tokens: 400, messages: [{ role: 'user', content }],
    }, { headers });
    const cloud = await ask(`deploy with ${AWS_KEY}; explain the deploy script`);
    assert.equal(cloud.headers.get('x-hearth-route'), 'cloud', cloud.text);
    const local = await ask('a private question about the build', { 'X-Hearth-Sensitivity': 'private' });
    assert.equal(local.headers.get('x-hearth-route'), 'local', local.text);
  } finally {
    await server.stop();
    await postJson(`${fake.url}/_reset`, {});
  }
  const shown = runHearth(['audit', 'export', '--db', db]);
  assert.equal(shown.status, 0, shown.stderr);
  const [cloudRecord, localRecord] = shown.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.match(cloudRecord.prompt, /user: deploy with \[\[REDACTED_[A-Z_]+_1\]\]; explain the deploy script/);
  assert.ok(!cloudRecord.prompt.includes(AWS_KEY), cloudRecord.prompt);
  assert.match(localRecord.prompt, /a private question about the build/);
});

test('default configuration: no outbound connection, doctor passes', async () => {
  const { tinyModel } = await import('./helpers.mjs');
  const plain = await startServer({ models: [`tiny=${tinyModel()}`], args: ['--audit-db', path.join(makeTempDir(), 'a.db')] });
  try {
    for (let i = 0; i < 3; i++) {
      const r = await postJson(`${plain.url}/v1/chat/completions`, { model: 'tiny', max_tokens: 300, messages: [{ role: 'user', content: `explain ${AWS_KEY}` }] });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-hearth-route'), 'local');
    }
    const status = (await request(`${plain.url}/hearth/status`)).body;
    assert.deepEqual(status.egress_allow, []);
    assert.deepEqual(status.egress_attempts, []);
    assert.equal(status.telemetry, 'none');
    const doctor = runHearth(['doctor', '--url', plain.url]);
    assert.equal(doctor.status, 0, doctor.stdout + doctor.stderr);
    assert.match(doctor.stdout, /127\.0\.0\.1:\d+ \(loopback only\)/);
    assert.match(doctor.stdout, /no open connection to another host/);
  } finally {
    await plain.stop();
  }
});
