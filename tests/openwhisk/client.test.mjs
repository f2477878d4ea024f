// The official `openwhisk` npm client, unchanged, against a real `specfaas serve`.
// Run by crates/cli/tests/it (openwhisk_client module) with SPECFAAS_BIN set to the binary under test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import openwhisk from 'openwhisk';

let server;
let ow;
let apihost;
let auth;

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

before(async () => {
  const bin = process.env.SPECFAAS_BIN;
  assert.ok(bin, 'SPECFAAS_BIN must name the specfaas binary');
  const port = await freePort();
  const data = mkdtempSync(join(tmpdir(), 'sfow-'));
  // Actions may `require('openwhisk')`, as on OpenWhisk's Node.js runtime: the client installed here is on their path.
  const here = dirname(fileURLToPath(import.meta.url));
  const env = { ...process.env, SPECFAAS_NODE_PATH: join(here, 'node_modules') };
  server = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', data], { stdio: 'inherit', env });
  apihost = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${apihost}/health`)).ok) break;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  auth = readFileSync(join(data, 'auth'), 'utf8').trim();
  ow = openwhisk({ apihost, api_key: auth });
});

after(() => server && server.kill());

const HELLO = "def main(args):\n    print('hello', args.get('name', 'world'))\n    return {'greeting': 'hello ' + args.get('name', 'world')}\n";

test('Python and Node.js actions and a sequence are created and invoked', async () => {
  await ow.actions.create({ name: 'hello', action: HELLO, kind: 'python:3' });
  await ow.actions.create({ name: 'inc', action: 'async function main(p) { return { n: (p.n || 0) + 1 }; }', kind: 'nodejs:20' });
  await ow.actions.create({ name: 'twice', action: { exec: { kind: 'sequence', components: ['/guest/inc', '/guest/inc'] } } });
  const hello = await ow.actions.invoke({ name: 'hello', params: { name: 'ada' }, blocking: true, result: true });
  assert.deepEqual(hello, { greeting: 'hello ada' });
  const twice = await ow.actions.invoke({ name: 'twice', params: { n: 40 }, blocking: true, result: true });
  assert.deepEqual(twice, { n: 42 });
  const record = await ow.actions.invoke({ name: 'hello', blocking: true });
  assert.equal(record.response.status, 'success');
  assert.deepEqual(record.response.result, { greeting: 'hello world' });
  const got = await ow.actions.get({ name: 'hello' });
  assert.equal(got.exec.code, HELLO);
  const list = await ow.actions.list();
  assert.deepEqual(list.map((a) => a.name).sort(), ['hello', 'inc', 'twice']);
});

test('a non-blocking invocation returns an id; its activation, result and logs follow', async () => {
  const { activationId } = await ow.actions.invoke({ name: 'hello', params: { name: 'bo' } });
  assert.match(activationId, /^[0-9a-f]{32}$/);
  let activation;
  for (let i = 0; i < 100 && !activation; i++) {
    try {
      activation = await ow.activations.get({ name: activationId });
    } catch (e) {
      if (e.statusCode !== 404) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  assert.ok(activation, 'the activation appears');
  const result = await ow.activations.result({ name: activationId });
  assert.deepEqual(result.result, { greeting: 'hello bo' });
  const { logs } = await ow.activations.logs({ name: activationId });
  assert.match(logs[0], /stdout: hello bo$/);
  const listed = await ow.activations.list({ name: 'hello', limit: 1 });
  assert.equal(listed[0].activationId, activationId);
});

test('an update replaces the code and a delete removes the action', async () => {
  await ow.actions.update({ name: 'hello', action: "def main(args):\n    return {'v': 2}\n", kind: 'python:3' });
  assert.deepEqual(await ow.actions.invoke({ name: 'hello', blocking: true, result: true }), { v: 2 });
  await ow.actions.delete({ name: 'hello' });
  await assert.rejects(ow.actions.get({ name: 'hello' }), (e) => e.statusCode === 404);
});

test('bad input is refused with the right status and a message', async () => {
  await assert.rejects(ow.actions.create({ name: 'bad', action: 'x', kind: 'cobol' }), (e) => e.statusCode === 400 && /cobol/.test(e.message));
  await assert.rejects(ow.actions.invoke({ name: 'ghost', blocking: true }), (e) => e.statusCode === 404);
  await assert.rejects(ow.actions.create({ name: 'inc', action: 'function main() {}' }), (e) => e.statusCode === 409);
  const stranger = openwhisk({ apihost, api_key: '00000000-0000-0000-0000-000000000000:nope' });
  await assert.rejects(stranger.actions.list(), (e) => e.statusCode === 401);
  const big = 'x'.repeat(1 << 20);
  await assert.rejects(ow.actions.invoke({ name: 'inc', params: { big }, blocking: true }), (e) => e.statusCode === 413);
  assert.deepEqual(await ow.actions.invoke({ name: 'inc', params: { n: 1 }, blocking: true, result: true }), { n: 2 }, 'still serving');
});

test('an action invokes another action through the openwhisk client inside it', async () => {
  const caller = `
const openwhisk = require('openwhisk');
async function main(params) {
  const ow = openwhisk(); // __OW_API_HOST and __OW_API_KEY come from the activation
  const inner = await ow.actions.invoke({ name: 'inc', params: { n: params.n }, blocking: true, result: true });
  return { outer: true, inner };
}`;
  await ow.actions.create({ name: 'caller', action: caller, kind: 'nodejs:20' });
  const record = await ow.actions.invoke({ name: 'caller', params: { n: 5 }, blocking: true });
  assert.deepEqual(record.response.result, { outer: true, inner: { n: 6 } });
  // The inner invocation was an implicit call of the caller's activation: recorded as caused by it.
  const inner = (await ow.activations.list({ name: 'inc', limit: 1, docs: true }))[0];
  const causedBy = inner.annotations.find((a) => a.key === 'causedBy');
  assert.equal(causedBy && causedBy.value, record.activationId);
});
