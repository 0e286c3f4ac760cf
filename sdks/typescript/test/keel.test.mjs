// End to end: a real `keel serve` (KEEL_BIN, or <repo>/target/debug/keel) running a command
// function written with this SDK (test/fixtures/fn.mjs), called with this SDK's client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KeelClient, KeelApiError } from '../src/index.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const bin = process.env.KEEL_BIN ?? join(repo, 'target/debug/keel');
const fixture = fileURLToPath(new URL('./fixtures/fn.mjs', import.meta.url));
const skip = existsSync(bin) ? false : `no keel binary at ${bin} (build it, or set KEEL_BIN)`;

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

/** @param {() => Promise<boolean>} check @param {number} ms @param {string} what */
async function eventually(check, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** @type {string} */
let dir;
/** @type {import('node:child_process').ChildProcess | undefined} */
let keel;
/** @type {KeelClient} */
let client;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'keel-ts-'));
  const port = await freePort();
  const config = join(dir, 'keel.toml');
  writeFileSync(config, `
[server]
listen = "127.0.0.1:${port}"
[storage]
url = "sqlite://${join(dir, 'keel.db')}"
[auth]
mode = "keys"
[functions.ts-fn]
command = [${JSON.stringify(process.execPath)}, ${JSON.stringify(fixture)}]
timeout = "5s"
instance_concurrency = 8
retry = { max_attempts = 4, initial = "50ms", max = "200ms" }
grants = { kv = ["notes:read", "notes:write"], publish = ["note.created"] }
[topics."note.created"]
`);
  const out = execFileSync(bin, ['keys', 'create', '--name', 'ts-test', '--scope', 'admin', '-c', config], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const secret = /keel_sk_[A-Za-z0-9_-]+/.exec(out)?.[0];
  assert.ok(secret, `a secret in ${out}`);
  const log = openSync(join(dir, 'keel.log'), 'a');
  keel = spawn(bin, ['serve', '-c', config], { stdio: ['ignore', log, log], env: { ...process.env, RUST_LOG: 'warn' } });
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => (await fetch(`${url}/readyz`)).status === 200, 20_000, 'keel ready');
  client = new KeelClient({ url, apiKey: secret });
});

after(async () => {
  if (keel && keel.exitCode === null) {
    const exited = new Promise((r) => keel?.once('exit', r));
    keel.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (keel.exitCode === null) keel.kill('SIGKILL');
  }
  if (dir && !process.env.KEEL_TS_KEEP) rmSync(dir, { recursive: true, force: true });
});

test('a sync invoke reaches the TS function with the contract headers', { skip }, async () => {
  const r = await client.invoke('ts-fn', { op: 'echo' });
  assert.equal(r.status, 200);
  const body = r.json();
  assert.equal(body.function, 'ts-fn');
  assert.equal(body.attempt, 1);
  assert.equal(body.invocation_id, r.invocationId);
  assert.ok(body.has_token, 'auth is on: the attempt carries a function token');
  assert.ok(body.deadline_in_future);
  assert.equal(r.attempts, 1);
});

test('effects land in KV (read by the function with its token, and back through the API)', { skip }, async () => {
  const r = await client.invoke('ts-fn', { op: 'note', id: 'n1', text: 'hello' });
  assert.equal(r.status, 201, 'the envelope status');
  assert.deepEqual(r.json(), { id: 'n1' });
  const stored = await client.kvGet('notes', 'n1');
  assert.deepEqual(stored?.value, { text: 'hello' });
  assert.ok((stored?.version ?? 0) >= 1);
  // Again: the function reads it (kvGet with the function token) and refuses, 409 passed through.
  await assert.rejects(client.invoke('ts-fn', { op: 'note', id: 'n1', text: 'again' }), (e) => {
    assert.ok(e instanceof KeelApiError);
    assert.equal(e.status, 409);
    assert.match(String(e.problem?.detail), /note n1 exists/);
    return true;
  });
});

test('if_version counts: concurrent increments lose nothing (conflicts are retried)', { skip }, async () => {
  await Promise.all(Array.from({ length: 5 }, () => client.invoke('ts-fn', { op: 'count' })));
  assert.equal((await client.kvGet('notes', 'count'))?.value, 5);
});

test('an async invoke is queued, runs, and its result is waited for', { skip }, async () => {
  const accepted = await client.invokeAsync('ts-fn', { op: 'echo' });
  assert.equal(accepted.status, 'queued');
  const result = await client.waitForResult(accepted.id, { timeoutMs: 15_000 });
  assert.equal(result.json().invocation_id, accepted.id);
});

test('Retryable({after}) is retried no sooner than Retry-After', { skip }, async () => {
  const started = Date.now();
  const { id } = await client.invokeAsync('ts-fn', { op: 'flaky' });
  const result = await client.waitForResult(id, { timeoutMs: 15_000 });
  assert.deepEqual(result.json(), { attempt: 2 });
  assert.ok(Date.now() - started >= 900, 'Retry-After: 1 honoured');
  const invocation = await client.getInvocation(id);
  assert.equal(invocation.attempts.length, 2);
});

test('an unexpected throw is a 500: retried, then dead when retries run out', { skip }, async () => {
  const { id } = await client.invokeAsync('ts-fn', { op: 'crash' });
  await eventually(async () => (await client.getInvocation(id)).status === 'dead', 15_000, 'dead');
  assert.equal((await client.getInvocation(id)).attempts.length, 4);
});

test('Permanent goes to the DLQ at once, with its message', { skip }, async () => {
  const { id } = await client.invokeAsync('ts-fn', { op: 'refuse' });
  await assert.rejects(client.waitForResult(id, { timeoutMs: 15_000 }), /ended dead/);
  const invocation = await client.getInvocation(id);
  assert.equal(invocation.attempts.length, 1, 'not retried');
  assert.match(JSON.stringify(invocation), /refused for good/);
  const dlq = /** @type {{items: {id: string}[]}} */ (await (await fetch(`${client.url}/v1/dlq?function=ts-fn`, { headers: { authorization: `Bearer ${client.apiKey}` } })).json());
  assert.ok(dlq.items.some((i) => i.id === id), 'in the DLQ');
});

test('the client replays with an Idempotency-Key', { skip }, async () => {
  const first = await client.invoke('ts-fn', { op: 'echo' }, { idempotencyKey: 'order "42"' });
  const again = await client.invoke('ts-fn', { op: 'echo' }, { idempotencyKey: 'order "42"' });
  assert.equal(first.replayed, false);
  assert.equal(again.replayed, true);
  assert.equal(again.invocationId, first.invocationId);
  assert.deepEqual(again.json(), first.json());
  // The function's own idempotency-key is Keel's, stable for the invocation (not the caller's).
  assert.equal(first.json().idempotency_key, first.invocationId);
  await assert.rejects(client.invoke('ts-fn', { op: 'other' }, { idempotencyKey: 'order "42"' }), (e) => e instanceof KeelApiError && e.status === 422);
  const a = await client.invokeAsync('ts-fn', { op: 'echo' }, { idempotencyKey: 'async-1' });
  const b = await client.invokeAsync('ts-fn', { op: 'echo' }, { idempotencyKey: 'async-1' });
  assert.equal(b.id, a.id);
  assert.equal(b.replayed, true);
});

test('publish: a plain JSON body and a CloudEvent, deduplicated by source + id', { skip }, async () => {
  const plain = await client.publish('note.created', { id: 'x' });
  assert.equal(plain.ids.length, 1);
  const first = await client.publish('note.created', { id: 'y' }, { id: 'evt-1', source: 'tests' });
  const again = await client.publish('note.created', { id: 'y' }, { id: 'evt-1', source: 'tests' });
  assert.deepEqual(again.ids, first.ids);
});
