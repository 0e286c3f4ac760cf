// Runs the shared SDK contract suite (../contract/cases.json; format in ../contract/README.md)
// against this SDK's node:http handler, in-process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createHandler, Reply, Effects, Retryable, Permanent, BadRequest } from '../src/index.js';

/** @type {{cases: any[]}} */
const { cases } = JSON.parse(readFileSync(new URL('../../contract/cases.json', import.meta.url), 'utf8'));

/**
 * The handler a case describes, as this SDK writes it.
 * @param {any} b @param {import('../src/index.js').Request} req
 */
function behave(b, req) {
  if ('reply_json' in b) return b.status !== undefined ? Reply.json(b.reply_json, b.status) : b.reply_json;
  if ('reply_text' in b) return Reply.text(b.reply_text);
  if ('reply_empty' in b) return undefined;
  if ('echo_json' in b) return Reply.json(req.json());
  if ('echo_text' in b) return { body: req.text(), content_type: req.contentType };
  if ('echo_ctx' in b) {
    const c = req.ctx;
    return {
      invocation_id: c.invocationId, attempt: c.attempt, function: c.function,
      deadline_ms: c.deadline === null ? null : c.deadline.getTime(),
      idempotency_key: c.idempotencyKey, traceparent: c.traceparent, tracestate: c.tracestate,
      token: c.token, subscription: c.subscription, event: c.event,
    };
  }
  if ('effects' in b) {
    const effects = new Effects();
    if (b.status !== undefined) effects.status(b.status);
    if ('result' in b) effects.result(b.result);
    for (const item of b.effects) {
      if (item.put) {
        const p = item.put;
        if (p.if_absent) effects.putIfAbsent(p.ns, p.key, p.value);
        else if (p.if_version !== undefined) effects.putIfVersion(p.ns, p.key, p.value, p.if_version);
        else effects.put(p.ns, p.key, p.value);
      } else if (item.delete) {
        effects.delete(item.delete.ns, item.delete.key, { ifVersion: item.delete.if_version });
      } else if (item.emit) {
        const { topic, ...options } = item.emit;
        effects.emit(topic, options);
      } else throw new Error(`unknown effect ${JSON.stringify(item)}`);
    }
    return effects;
  }
  if ('retryable' in b) {
    const r = b.retryable;
    const error = new Retryable({ after: r.after_secs });
    if (r.message !== undefined) error.message = r.message;
    if (r.status !== undefined) error.withStatus(r.status);
    throw error;
  }
  if ('permanent' in b) throw new Permanent(b.permanent.message, { status: b.permanent.status });
  if ('bad_request' in b) throw new BadRequest(b.bad_request);
  if ('throw' in b) throw new Error(b.throw);
  throw new Error(`unknown behaviour ${JSON.stringify(b)}`);
}

/** @param {any} expected @param {any} actual @returns {boolean} */
function subset(expected, actual) {
  if (expected !== null && typeof expected === 'object' && !Array.isArray(expected)) {
    return actual !== null && typeof actual === 'object' && !Array.isArray(actual)
      && Object.entries(expected).every(([k, v]) => k in actual && subset(v, actual[k]));
  }
  return JSON.stringify(expected) === JSON.stringify(actual) || (() => {
    try { assert.deepStrictEqual(actual, expected); return true; } catch { return false; }
  })();
}

/** @type {any} */
let current = null;
/** @type {http.Server} */
let server;
/** @type {number} */
let port;

before(async () => {
  const handler = createHandler((req) => behave(current, req), { onError: () => {} });
  server = http.createServer(handler);
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
});
after(() => new Promise((r) => server.close(() => r(undefined))));

/** @param {any} request @returns {Promise<{status: number, headers: http.IncomingHttpHeaders, body: string}>} */
function send(request) {
  const body = request.body_text !== undefined ? request.body_text : 'body' in request ? JSON.stringify(request.body) : '';
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, method: request.method ?? 'POST', path: request.path ?? '/',
      headers: { ...request.headers, 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      /** @type {Buffer[]} */
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

for (const c of cases) {
  test(`contract: ${c.name}`, async () => {
    current = c.handler;
    const got = await send(c.request);
    const e = c.expect;
    assert.equal(got.status, e.status, `status (body ${got.body})`);
    for (const [name, value] of Object.entries(e.headers ?? {})) {
      assert.equal(got.headers[name] ?? null, value, `header ${name}`);
    }
    if ('json' in e) assert.deepStrictEqual(JSON.parse(got.body), e.json);
    if ('json_subset' in e) assert.ok(subset(e.json_subset, JSON.parse(got.body)), `${got.body} holds ${JSON.stringify(e.json_subset)}`);
    if ('body_text' in e) assert.equal(got.body, e.body_text);
  });
}
