// The SDK's calls to Keel (KV reads, egress) against a stand-in Keel, and its error mapping.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Ctx, EgressError, Retryable, Permanent, KeelError, createHandler, Effects, KeelClient } from '../src/index.js';

/** @type {http.IncomingMessage[]} */
const seen = [];
/** @type {http.Server} */
let keel;
/** @type {string} */
let url;

before(async () => {
  keel = http.createServer((req, res) => {
    seen.push(req);
    const path = req.url ?? '';
    const problem = (/** @type {number} */ status, /** @type {string} */ type, /** @type {Record<string,string>} */ headers = {}) => {
      res.writeHead(status, { 'content-type': 'application/problem+json', ...headers });
      res.end(JSON.stringify({ type: `urn:keel:problem:${type}`, status, detail: `keel says ${type}` }));
    };
    if (path === '/v1/kv/users/u1') { res.writeHead(200, { etag: '"7"', 'content-type': 'application/json' }); res.end('{"name":"Ada"}'); }
    else if (path.startsWith('/v1/kv/')) { res.writeHead(404); res.end(); }
    else if (path.startsWith('/v1/egress/pay/breaker')) problem(503, 'breaker-open', { 'retry-after': '7' });
    else if (path.startsWith('/v1/egress/pay/limited')) problem(429, 'rate-limited', { 'retry-after': '2' });
    else if (path.startsWith('/v1/egress/pay/forbidden')) problem(403, 'forbidden');
    else if (path.startsWith('/v1/egress/pay/lookalike')) problem(500, 'breaker-open');
    else if (path.startsWith('/v1/egress/pay/')) {
      res.writeHead(path.includes('down') ? 503 : 200, { 'content-type': 'application/json', 'retry-after': '4' });
      res.end(JSON.stringify({ path, method: req.method, key: req.headers['idempotency-key'] ?? null }));
    } else { res.writeHead(500); res.end(); }
  });
  await new Promise((r) => keel.listen(0, '127.0.0.1', () => r(undefined)));
  url = `http://127.0.0.1:${/** @type {import('node:net').AddressInfo} */ (keel.address()).port}`;
});
after(() => { keel.closeAllConnections(); return new Promise((r) => keel.close(() => r(undefined))); });

const headers = {
  'keel-invocation-id': 'inv1', 'authorization': 'Bearer keel_ft_t', 'traceparent': '00-aa-bb-01',
};

test('kvGet reads the value and version with the function token; absent is null', async () => {
  const ctx = new Ctx(headers, { keelUrl: url });
  assert.deepEqual(await ctx.kvGet('users', 'u1'), { value: { name: 'Ada' }, version: 7 });
  assert.equal(seen.at(-1)?.headers.authorization, 'Bearer keel_ft_t');
  assert.equal(await ctx.kvGet('users', 'nobody'), null);
  await assert.rejects(new Ctx({}, { keelUrl: null }).kvGet('a', 'b'), (e) => e instanceof Retryable);
});

test('egress: the dependency answer is returned as is, with the contract headers sent', async () => {
  const pay = new Ctx(headers, { keelUrl: url }).dependency('pay');
  const r = await pay.post('charges?x=1', { json: { cents: 5 }, query: { currency: 'eur' } });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json(), { path: '/v1/egress/pay/charges?x=1&currency=eur', method: 'POST', key: null });
  const sent = seen.at(-1);
  assert.equal(sent?.headers['keel-invocation-id'], 'inv1');
  assert.equal(sent?.headers.authorization, 'Bearer keel_ft_t');
  assert.equal(sent?.headers.traceparent, '00-aa-bb-01');
  assert.equal(sent?.headers['content-type'], 'application/json');
  const down = await pay.get('/down');
  assert.equal(down.status, 503, "a dependency's own 5xx is an answer");
  assert.throws(() => down.errorForStatus(), (e) => e instanceof Retryable && e.status === 503 && e.retryAfterSecs === 4);
  const lookalike = await pay.get('/lookalike');
  assert.equal(lookalike.status, 500, 'a problem of a status Keel does not give for that type is the dependency\'s');
});

test("egress: Keel's refusals are EgressErrors with the function's answer", async () => {
  const pay = new Ctx(headers, { keelUrl: url }).dependency('pay');
  await assert.rejects(pay.get('/breaker'), (e) => {
    assert.ok(e instanceof EgressError && e instanceof KeelError);
    assert.equal(e.kind, 'breaker-open');
    assert.equal(e.status, 503);
    assert.equal(e.retryAfterSecs, 7);
    assert.equal(e.message, 'pay: breaker open (keel says breaker-open)');
    return true;
  });
  await assert.rejects(pay.get('/limited'), (e) => e instanceof EgressError && e.kind === 'rate-limited' && e.status === 503 && e.retryAfterSecs === 2);
  await assert.rejects(pay.get('/forbidden'), (e) => e instanceof EgressError && e.kind === 'forbidden' && e.status === 422 && !e.retryable);
  await assert.rejects(new Ctx(headers, { keelUrl: 'http://127.0.0.1:1' }).dependency('pay').get('/x'),
    (e) => e instanceof EgressError && e.kind === 'keel-unavailable' && e.retryable);
});

test('errors: classes, statuses and Retry-After', () => {
  assert.equal(new Retryable('x').status, 503);
  assert.equal(new Retryable({ after: 1.2 }).retryAfterSecs, 2);
  assert.equal(new Retryable({ after: 1.5 }).message, 'retry after 1s 500ms');
  assert.equal(new Retryable('x', { status: 404 }).status, 503);
  assert.equal(new Permanent('x').status, 422);
  assert.equal(new Permanent('x', { status: 409 }).status, 409);
  assert.equal(new Permanent('x', { status: 408 }).status, 422);
});

test('createHandler takes a body a framework already parsed (Express json())', async () => {
  const handler = createHandler((req) => new Effects().result(req.json()));
  const server = http.createServer((req, res) => {
    // What express.json() leaves: the stream read, the object on req.body.
    req.resume();
    req.on('end', () => { /** @type {any} */ (req).body = { a: 1 }; handler(req, res); });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  const r = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: '{"a":1}' });
  assert.deepEqual(await r.json(), { status: 200, result: { a: 1 } });
  server.closeAllConnections();
  await new Promise((r) => server.close(() => r(undefined)));
});

test('client: the API key and a structured-field Idempotency-Key are sent', async () => {
  /** @type {any} */
  let got;
  const client = new KeelClient({
    url: 'http://keel.invalid/', apiKey: 'keel_sk_x',
    fetch: async (input, init) => {
      got = { input, init };
      return new Response('{"id":"i1","status":"queued"}', { status: 202, headers: { 'idempotent-replayed': 'true' } });
    },
  });
  assert.deepEqual(await client.invokeAsync('f', { a: 1 }, { idempotencyKey: 'a"b', delay: '30s' }), { id: 'i1', status: 'queued', replayed: true });
  assert.equal(got.input, 'http://keel.invalid/v1/functions/f/invocations');
  assert.equal(got.init.headers.authorization, 'Bearer keel_sk_x');
  assert.equal(got.init.headers['idempotency-key'], '"a\\"b"');
  assert.equal(got.init.headers['keel-delay'], '30s');
  assert.equal(got.init.headers['content-type'], 'application/json');
  await assert.rejects(client.invoke('f', {}, { idempotencyKey: '' }), TypeError);
});
