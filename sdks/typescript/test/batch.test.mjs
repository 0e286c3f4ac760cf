// A batch function's handler: items in (each with its own Ctx), per-item answers out; a sync
// call reaches the same handler as a batch of one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { BatchReply, BATCH_CONTENT_TYPE, createBatchHandler, Effects, Retryable, Permanent } from '../src/index.js';

/** @param {import('../src/index.js').Request[]} items */
function handler(items) {
  const reply = new BatchReply();
  for (const item of items) {
    const id = item.ctx.invocationId;
    const payload = item.contentType === 'text/plain' ? item.text() : item.json();
    if (payload === 'later') reply.fail(id, new Retryable('busy', { after: 2 }));
    else if (payload === 'no') reply.fail(id, new Permanent('refused'));
    else if (payload === 'effects') reply.effects(id, new Effects().put('docs', id, 1));
    else if (payload === 'boom') throw new Retryable('the index is down');
    else reply.result(id, { payload, attempt: item.ctx.attempt, key: item.ctx.idempotencyKey,
      fn: item.ctx.function, event: item.ctx.event?.type ?? null, subscription: item.ctx.subscription });
  }
  return reply;
}

/** @param {Record<string, string>} headers @param {string} body */
async function post(headers, body) {
  const server = http.createServer(createBatchHandler(handler));
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  try {
    const response = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', headers, body });
    const text = await response.text();
    return { status: response.status, json: text ? JSON.parse(text) : null };
  } finally {
    server.close();
  }
}

const batch = { 'content-type': BATCH_CONTENT_TYPE, 'keel-function': 'index' };

test('a batch is answered per item, each item with its own context', async () => {
  const items = [
    { id: 'a', attempt: 1, idempotency_key: 'a', payload: { ok: true }, content_type: 'application/json' },
    { id: 'b', attempt: 3, idempotency_key: 'b', payload: 'later' },
    { id: 'c', attempt: 1, idempotency_key: 'c', payload: 'no' },
    { id: 'd', attempt: 1, idempotency_key: 'run/step', payload: 'effects' },
    { id: 'e', attempt: 2, idempotency_key: 'e', payload_base64: 'aGk=', content_type: 'text/plain',
      subscription: 'welcome', event: { id: 'e1', type: 'user.registered', source: 's' } },
  ];
  const { status, json } = await post(batch, JSON.stringify(items));
  assert.equal(status, 200);
  assert.deepEqual(json.failed, [{ id: 'b', error: 'busy', retry_after: 2 }, { id: 'c', error: 'refused', permanent: true }]);
  assert.deepEqual(json.results.a, { payload: { ok: true }, attempt: 1, key: 'a', fn: 'index', event: null, subscription: null });
  assert.deepEqual(json.results.e, { payload: 'hi', attempt: 2, key: 'e', fn: 'index', event: 'user.registered', subscription: 'welcome' });
  assert.deepEqual(json.effects.d.kv, [{ ns: 'docs', key: 'd', value: 1 }]);
});

test('a thrown error fails the whole batch; a sync call is a batch of one', async () => {
  const failed = await post(batch, JSON.stringify([{ id: 'x', attempt: 1, idempotency_key: 'x', payload: 'boom' }]));
  assert.equal(failed.status, 503);
  assert.equal(failed.json.detail, 'the index is down');
  assert.equal((await post(batch, '{"not": "a batch"}')).status, 400);
  const single = { 'keel-invocation-id': 's1', 'keel-attempt': '1', 'content-type': 'application/json' };
  const ok = await post(single, '{"n": 1}');
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.json.payload, { n: 1 });
  assert.equal((await post(single, '"no"')).status, 422);
  assert.equal((await post(single, '"later"')).status, 503);
});
