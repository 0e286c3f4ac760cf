// Batch functions (`batch = { max_size, max_wait }` in keel.toml): Keel sends up to `max_size`
// async invocations and event deliveries in one request. `createBatchHandler(fn)` reads the
// batch into one Request per item (each with its own Ctx: id, attempt, idempotency key, event)
// and turns fn's BatchReply into the answer Keel reads: which items failed (each retried or
// dead-lettered alone), and per-item results and effects. A sync call reaches fn as a batch of one.

import http from 'node:http';
import { Ctx } from './ctx.js';
import { Effects, EFFECTS_CONTENT_TYPE } from './effects.js';
import { KeelError, Retryable, BadRequest, Permanent } from './errors.js';
import { Request } from './server.js';

/** The content type of a batch request. */
export const BATCH_CONTENT_TYPE = 'application/vnd.keel.batch+json';

/** What a batch handler answers: which items failed, and what the others produced. */
export class BatchReply {
  constructor() {
    /** @type {[string, KeelError][]} */
    this._failed = [];
    /** @type {[string, unknown][]} */
    this._results = [];
    /** @type {[string, Effects][]} */
    this._effects = [];
  }

  /**
   * Item `id` failed: retried after Keel's backoff (no sooner than the error's retry-after) when
   * the error is retryable, else dead-lettered.
   * @param {string} id @param {KeelError} error @returns {this}
   */
  fail(id, error) {
    this._failed.push([id, error]);
    return this;
  }

  /** Item `id` succeeded with `result` (JSON). @param {string} id @param {unknown} result @returns {this} */
  result(id, result) {
    this._results.push([id, result]);
    return this;
  }

  /** Item `id` succeeded with `effects`, committed with its completion. @param {string} id @param {Effects} effects @returns {this} */
  effects(id, effects) {
    this._effects.push([id, effects]);
    return this;
  }

  /** The answer as Keel reads it. @returns {Record<string, unknown>} */
  toJSON() {
    const failed = this._failed.map(([id, error]) => {
      /** @type {Record<string, unknown>} */
      const item = { id, error: error.message };
      if (!error.retryable) item.permanent = true;
      else if (error.retryAfterSecs !== null) item.retry_after = error.retryAfterSecs;
      return item;
    });
    /** @type {Record<string, unknown>} */
    const answer = { failed };
    if (this._results.length > 0) answer.results = Object.fromEntries(this._results);
    if (this._effects.length > 0) answer.effects = Object.fromEntries(this._effects.map(([id, e]) => [id, e.toJSON()]));
    return answer;
  }
}

/**
 * @typedef {(items: Request[]) => BatchReply | Promise<BatchReply>} BatchHandler
 * @typedef {{keelUrl?: string | null, onError?: (error: unknown) => void}} BatchHandlerOptions
 */

/**
 * The items of a batch, each a Request whose Ctx is the batch's headers with the item's own.
 * @param {import('node:http').IncomingHttpHeaders} headers @param {Buffer} body
 * @param {BatchHandlerOptions | undefined} options @returns {Request[]}
 */
export function readItems(headers, body, options) {
  let wire;
  try {
    wire = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new BadRequest(`malformed batch: ${/** @type {Error} */ (e).message}`);
  }
  if (!Array.isArray(wire)) throw new BadRequest('malformed batch: not an array');
  return wire.map((/** @type {any} */ item) => {
    /** @type {Record<string, string | string[] | undefined>} */
    const own = {
      ...headers,
      'keel-invocation-id': String(item.id),
      'keel-attempt': String(item.attempt),
      'idempotency-key': String(item.idempotency_key),
      'content-type': item.content_type ?? undefined,
      'keel-subscription': item.subscription ?? undefined,
    };
    for (const [name, value] of Object.entries(item.event ?? {})) own[`ce-${name}`] = String(value);
    const payload = item.payload !== undefined
      ? Buffer.from(JSON.stringify(item.payload))
      : Buffer.from(item.payload_base64 ?? '', 'base64');
    return new Request(new Ctx(own, options), payload, item.content_type ?? null);
  });
}

/**
 * @param {import('node:http').ServerResponse} res @param {number} status
 * @param {string | null} contentType @param {string} body @param {number | null} [retryAfter]
 */
function send(res, status, contentType, body, retryAfter = null) {
  /** @type {Record<string, string | number>} */
  const headers = { 'content-length': Buffer.byteLength(body) };
  if (contentType !== null) headers['content-type'] = contentType;
  if (retryAfter !== null) headers['retry-after'] = String(retryAfter);
  res.writeHead(status, headers);
  res.end(body);
}

/** @param {import('node:http').ServerResponse} res @param {KeelError} error */
function problem(res, error) {
  const status = error.status >= 100 && error.status < 600 ? error.status : 500;
  const body = JSON.stringify({ type: 'about:blank', title: http.STATUS_CODES[status] ?? 'Error', status, detail: error.message });
  send(res, status, 'application/problem+json', body, error.retryAfterSecs);
}

/**
 * A sync call's answer (a batch of one): the item's error, effects, result, or 204.
 * @param {import('node:http').ServerResponse} res @param {BatchReply} reply @param {string} id
 */
function answerOne(res, reply, id) {
  const failed = reply._failed.find(([item]) => item === id);
  if (failed) return problem(res, failed[1]);
  const effects = reply._effects.find(([item]) => item === id);
  if (effects) return send(res, 200, EFFECTS_CONTENT_TYPE, JSON.stringify(effects[1].toJSON()));
  const result = reply._results.find(([item]) => item === id);
  if (result) return send(res, 200, 'application/json', JSON.stringify(result[1]));
  return send(res, 204, null, '');
}

/**
 * A node:http request handler that runs the batch handler `fn` for each batch (and each sync
 * call, as a batch of one).
 * @param {BatchHandler} fn
 * @param {BatchHandlerOptions} [options]
 * @returns {(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void}
 */
export function createBatchHandler(fn, options) {
  return (req, res) => {
    if (req.method === 'GET') return send(res, 200, 'text/plain', 'ok');
    if (req.method !== 'POST') return problem(res, new Permanent('only POST invokes a function', { status: 405 }));
    /** @type {Buffer[]} */
    const chunks = [];
    req.on('data', (/** @type {Buffer} */ c) => chunks.push(c));
    req.on('error', (e) => {
      if (!res.headersSent) problem(res, new Retryable(`reading the request: ${e.message}`));
    });
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      const media = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      try {
        if (media === BATCH_CONTENT_TYPE) {
          const reply = await fn(readItems(req.headers, body, options));
          send(res, 200, 'application/json', JSON.stringify(reply.toJSON()));
        } else {
          const one = new Request(new Ctx(req.headers, options), body, req.headers['content-type'] ?? null);
          answerOne(res, await fn([one]), one.ctx.invocationId);
        }
      } catch (e) {
        if (e instanceof KeelError) return problem(res, e);
        // An unexpected throw: a 500, every item retried by Keel (never a reset).
        if (options?.onError) options.onError(e);
        else console.error('keel-sdk: the batch handler threw (answered 500, Keel retries every item):', e);
        const message = e instanceof Error ? e.message : String(e);
        problem(res, new Retryable(`the handler threw: ${message}`, { status: 500 }));
      }
    });
  };
}

/**
 * Serves the batch handler `fn` on `host:port` (default 127.0.0.1:$PORT) until SIGTERM or SIGINT:
 * the `serve` of a batch function. Resolves once listening.
 * @param {BatchHandler} fn
 * @param {BatchHandlerOptions & {port?: number, host?: string}} [options]
 * @returns {Promise<import('node:http').Server>}
 */
export function serveBatch(fn, options = {}) {
  const port = options.port ?? (process.env.PORT !== undefined ? Number(process.env.PORT) : 8080);
  const server = http.createServer({ keepAliveTimeout: 65_000 }, createBatchHandler(fn, options));
  const stop = () => server.close(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, options.host ?? '127.0.0.1', () => resolve(server));
  });
}
