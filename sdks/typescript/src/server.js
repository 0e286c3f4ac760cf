// The function's HTTP side: `createHandler(fn)` is a node:http `(req, res)` handler (usable with
// Express or Fastify's raw request/response) that turns each POST into a Request for `fn` and its
// answer into the contract's response; `serve(fn)` runs it on 127.0.0.1:$PORT. GET on any path
// answers 200 `ok` (health checks); SIGTERM stops accepting and lets requests in flight finish.

import http from 'node:http';
import { Ctx } from './ctx.js';
import { Effects, EFFECTS_CONTENT_TYPE } from './effects.js';
import { KeelError, Retryable, BadRequest, Permanent } from './errors.js';
import { Reply } from './reply.js';

const DEFAULT_PORT = 8080;

/** One invocation: its context and the payload as received. */
export class Request {
  /** @param {Ctx} ctx @param {Buffer} body @param {string | null} contentType */
  constructor(ctx, body, contentType) {
    this.ctx = ctx;
    /** The payload as received. */
    this.body = body;
    this.contentType = contentType;
  }

  /** The payload as UTF-8 text. */
  text() {
    return this.body.toString('utf8');
  }

  /** The payload as JSON; one that does not parse is a BadRequest (400, not retried). @returns {any} */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new BadRequest(`invalid JSON body: ${/** @type {Error} */ (e).message}`);
    }
  }
}

/**
 * @typedef {(req: Request) => unknown} Handler
 * @typedef {{keelUrl?: string | null, onError?: (error: unknown, req: Request) => void}} HandlerOptions
 */

const REASONS = http.STATUS_CODES;

/**
 * @param {import('node:http').ServerResponse} res @param {number} status
 * @param {string | null} contentType @param {string | Uint8Array} body
 * @param {number | null} [retryAfter]
 */
function send(res, status, contentType, body, retryAfter = null) {
  /** @type {Record<string, string | number>} */
  const headers = { 'content-length': typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength };
  if (contentType !== null) headers['content-type'] = contentType;
  if (retryAfter !== null) headers['retry-after'] = String(retryAfter);
  res.writeHead(status, headers);
  res.end(body);
}

/** An RFC 9457 problem for `error`. @param {import('node:http').ServerResponse} res @param {KeelError} error */
function problem(res, error) {
  const status = error.status >= 100 && error.status < 600 ? error.status : 500;
  const body = JSON.stringify({ type: 'about:blank', title: REASONS[status] ?? 'Error', status, detail: error.message });
  send(res, status, 'application/problem+json', body, error.retryAfterSecs);
}

/**
 * Writes what the handler answered: a Reply, Effects, undefined (204) or any other value (JSON).
 * @param {import('node:http').ServerResponse} res @param {unknown} value
 */
function answer(res, value) {
  if (value instanceof Effects) {
    send(res, 200, EFFECTS_CONTENT_TYPE, JSON.stringify(value.toJSON()));
  } else if (value instanceof Reply) {
    send(res, value.status, value.contentType, value.body);
  } else if (value === undefined) {
    send(res, 204, null, '');
  } else {
    send(res, 200, 'application/json', JSON.stringify(value));
  }
}

/**
 * @param {import('node:http').ServerResponse} res @param {unknown} error
 * @param {Request} req @param {HandlerOptions | undefined} options
 */
function fail(res, error, req, options) {
  if (error instanceof KeelError) {
    problem(res, error);
    return;
  }
  // An unexpected throw: a 500, retried by Keel (never a reset).
  if (options?.onError) options.onError(error, req);
  else console.error(`keel-sdk: the handler threw (answered 500, Keel retries):`, error);
  const message = error instanceof Error ? error.message : String(error);
  problem(res, new Retryable(`the handler threw: ${message}`, { status: 500 }));
}

/**
 * A node:http request handler that runs `fn` for each invocation.
 * @param {Handler} fn
 * @param {HandlerOptions} [options]
 * @returns {(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void}
 */
export function createHandler(fn, options) {
  return (req, res) => {
    if (req.method === 'GET') {
      send(res, 200, 'text/plain', 'ok');
      return;
    }
    if (req.method !== 'POST') {
      problem(res, new Permanent('only POST invokes a function', { status: 405 }));
      return;
    }
    const run = (/** @type {Buffer} */ body) => {
      const ct = req.headers['content-type'];
      const request = new Request(new Ctx(req.headers, options), body, ct ?? null);
      let out;
      try {
        out = fn(request);
      } catch (e) {
        fail(res, e, request, options);
        return;
      }
      if (out !== null && typeof out === 'object' && typeof (/** @type {any} */ (out).then) === 'function') {
        /** @type {Promise<unknown>} */ (out).then((v) => answer(res, v), (e) => fail(res, e, request, options));
      } else {
        answer(res, out);
      }
    };
    // Express, Fastify and others may have read the body already.
    const parsed = /** @type {{body?: unknown}} */ (req).body;
    if (parsed !== undefined && req.readableEnded) {
      run(Buffer.isBuffer(parsed) ? parsed : Buffer.from(typeof parsed === 'string' ? parsed : JSON.stringify(parsed)));
      return;
    }
    /** @type {Buffer[]} */
    const chunks = [];
    req.on('data', (/** @type {Buffer} */ c) => chunks.push(c));
    req.on('end', () => run(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    req.on('error', (e) => {
      if (!res.headersSent) problem(res, new Retryable(`reading the request: ${e.message}`));
    });
  };
}

/**
 * Serves `fn` on `host:port` (default 127.0.0.1:$PORT, 8080 without PORT) until SIGTERM or
 * SIGINT, then stops accepting and lets requests in flight finish. Resolves once listening.
 * @param {Handler} fn
 * @param {HandlerOptions & {port?: number, host?: string, signals?: boolean}} [options]
 * @returns {Promise<import('node:http').Server>}
 */
export function serve(fn, options = {}) {
  const port = options.port ?? (process.env.PORT !== undefined ? Number(process.env.PORT) : DEFAULT_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    return Promise.reject(new Error(`PORT=${JSON.stringify(process.env.PORT)} is not a port number`));
  }
  const server = http.createServer({ keepAliveTimeout: 65_000 }, createHandler(fn, options));
  server.headersTimeout = 66_000;
  if (options.signals !== false) {
    const stop = () => {
      server.close(() => process.exit(0));
      server.closeIdleConnections();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  }
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
