// A client for applications: invoke functions (sync and async) with an Idempotency-Key, publish
// events, read invocations and wait for their results, read KV — with an API key.

/**
 * @typedef {{idempotencyKey?: string, headers?: Record<string, string>, contentType?: string,
 *   signal?: AbortSignal}} CallOptions
 * @typedef {CallOptions & {delay?: string}} AsyncOptions
 * @typedef {CallOptions & {id?: string, type?: string, source?: string, subject?: string}} PublishOptions
 * @typedef {{id: string, function: string, status: string, attempts: unknown[],
 *   result?: unknown, result_status?: number, error?: string | null, [k: string]: unknown}} Invocation
 */

const TERMINAL = new Set(['succeeded', 'failed', 'dead', 'cancelled', 'discarded']);

/** A structured-field string for Idempotency-Key. @param {string} key */
function sfString(key) {
  if (key.length < 1 || key.length > 255 || !/^[\x20-\x7e]*$/.test(key)) {
    throw new TypeError('an idempotency key is 1–255 printable ASCII characters');
  }
  return `"${key.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** An answer of Keel (or of the function) that is not a success. */
export class KeelApiError extends Error {
  /** @param {number} status @param {Headers} headers @param {string} body */
  constructor(status, headers, body) {
    /** @type {any} */
    let problem = null;
    try {
      problem = JSON.parse(body);
    } catch { /* not JSON */ }
    const detail = problem && typeof problem === 'object' ? (problem.detail ?? problem.title) : null;
    super(`HTTP ${status}${detail ? `: ${detail}` : body ? `: ${body.slice(0, 200)}` : ''}`);
    this.name = 'KeelApiError';
    this.status = status;
    this.headers = headers;
    this.body = body;
    /** The RFC 9457 problem (or the function's JSON answer), when the body is JSON. */
    this.problem = problem;
    this.invocationId = headers.get('keel-invocation-id') ?? (problem?.invocation_id ?? null);
    const ra = headers.get('retry-after');
    this.retryAfterSecs = ra !== null && /^\d+$/.test(ra.trim()) ? Number(ra) : null;
  }
}

/** A function's answer to a sync invoke, or a stored result. */
export class InvokeResult {
  /** @param {number} status @param {Headers} headers @param {Buffer} body */
  constructor(status, headers, body) {
    this.status = status;
    this.headers = headers;
    this.body = body;
    this.contentType = headers.get('content-type');
    this.invocationId = headers.get('keel-invocation-id');
    const attempts = headers.get('keel-attempts');
    this.attempts = attempts === null ? null : Number(attempts);
    /** True when Keel replayed the stored answer of an earlier request with this Idempotency-Key. */
    this.replayed = headers.get('idempotent-replayed') === 'true';
  }

  text() {
    return this.body.toString('utf8');
  }

  /** @returns {any} */
  json() {
    return JSON.parse(this.text());
  }
}

export class KeelClient {
  /**
   * @param {{url?: string, apiKey?: string | null, fetch?: typeof fetch}} [options]
   *   default: `KEEL_URL` (or http://127.0.0.1:7733) and `KEEL_API_KEY`
   */
  constructor(options = {}) {
    this.url = (options.url ?? process.env.KEEL_URL ?? 'http://127.0.0.1:7733').replace(/\/+$/, '');
    this.apiKey = options.apiKey !== undefined ? options.apiKey : (process.env.KEEL_API_KEY ?? null);
    this.fetch = options.fetch ?? fetch;
  }

  /**
   * @param {string} method @param {string} path @param {unknown} [payload]
   * @param {CallOptions & {extra?: Record<string, string>}} [options]
   */
  async #call(method, path, payload, options = {}) {
    /** @type {Record<string, string>} */
    const headers = { ...options.headers, ...options.extra };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    if (options.idempotencyKey !== undefined) headers['idempotency-key'] = sfString(options.idempotencyKey);
    /** @type {string | Uint8Array | undefined} */
    let body;
    if (payload !== undefined) {
      if (typeof payload === 'string' || payload instanceof Uint8Array) {
        body = payload;
        headers['content-type'] ??= options.contentType ?? 'application/octet-stream';
      } else {
        body = JSON.stringify(payload);
        headers['content-type'] ??= options.contentType ?? 'application/json';
      }
    }
    const response = await this.fetch(`${this.url}${path}`, { method, headers, body: /** @type {BodyInit | undefined} */ (/** @type {unknown} */ (body)), signal: options.signal });
    const bytes = Buffer.from(await response.arrayBuffer());
    if (response.status >= 400) throw new KeelApiError(response.status, response.headers, bytes.toString('utf8'));
    return new InvokeResult(response.status, response.headers, bytes);
  }

  /**
   * Sync invoke: waits for the function's answer (Keel retries transient failures within the
   * deadline). Throws KeelApiError for a 4xx/5xx (the function's own 4xx, 502 retries exhausted,
   * 504 deadline, 503/429 shed). A string or bytes payload is sent as is.
   * @param {string} fn @param {unknown} payload @param {CallOptions} [options]
   */
  invoke(fn, payload, options) {
    return this.#call('POST', `/v1/functions/${encodeURIComponent(fn)}/invoke`, payload, options);
  }

  /**
   * Async invoke: `{id, status: "queued"}` once durable; `delay` (`30s`) schedules it later.
   * @param {string} fn @param {unknown} payload @param {AsyncOptions} [options]
   * @returns {Promise<{id: string, status: string, replayed: boolean}>}
   */
  async invokeAsync(fn, payload, options = {}) {
    const extra = options.delay ? { 'keel-delay': options.delay } : undefined;
    const r = await this.#call('POST', `/v1/functions/${encodeURIComponent(fn)}/invocations`, payload, { ...options, extra });
    return { ...r.json(), replayed: r.replayed };
  }

  /**
   * Publishes `data` on `topic` (Keel wraps it: type = topic, a generated id); with `id`,
   * `type`, `source` or `subject`, as a CloudEvent (same source + id again is accepted once).
   * @param {string} topic @param {unknown} data @param {PublishOptions} [options]
   * @returns {Promise<{ids: string[]}>}
   */
  async publish(topic, data, options = {}) {
    const path = `/v1/topics/${encodeURIComponent(topic)}/events`;
    const { id, type, source, subject } = options;
    if (id === undefined && type === undefined && source === undefined && subject === undefined) {
      return (await this.#call('POST', path, data, options)).json();
    }
    const event = {
      specversion: '1.0',
      id: id ?? crypto.randomUUID(),
      source: source ?? 'keel-sdk-ts',
      type: type ?? topic,
      ...(subject !== undefined ? { subject } : {}),
      datacontenttype: 'application/json',
      data,
    };
    return (await this.#call('POST', path, event, { ...options, contentType: 'application/cloudevents+json' })).json();
  }

  /** @param {string} id @returns {Promise<Invocation>} */
  async getInvocation(id) {
    return (await this.#call('GET', `/v1/invocations/${encodeURIComponent(id)}`)).json();
  }

  /** The stored answer of a succeeded invocation. @param {string} id */
  result(id) {
    return this.#call('GET', `/v1/invocations/${encodeURIComponent(id)}/result`);
  }

  /**
   * Polls the invocation until it ends: its result when it succeeded; a KeelApiError (status 0
   * and the invocation as `problem`) when it ended otherwise or `timeoutMs` passed.
   * @param {string} id @param {{timeoutMs?: number, intervalMs?: number}} [options]
   */
  async waitForResult(id, options = {}) {
    const end = Date.now() + (options.timeoutMs ?? 30_000);
    let interval = options.intervalMs ?? 50;
    for (;;) {
      const invocation = await this.getInvocation(id);
      if (invocation.status === 'succeeded') return this.result(id);
      if (TERMINAL.has(invocation.status) || Date.now() >= end) {
        const why = TERMINAL.has(invocation.status) ? `invocation ${id} ended ${invocation.status}` : `invocation ${id} still ${invocation.status}`;
        const error = new KeelApiError(0, new Headers(), JSON.stringify({ ...invocation, detail: why }));
        error.invocationId = id;
        throw error;
      }
      await new Promise((r) => setTimeout(r, Math.min(interval, Math.max(0, end - Date.now()))));
      interval = Math.min(interval * 2, 1000);
    }
  }

  /**
   * Reads KV (needs a key with `kv:NS:read` or `read`): `{value, version}` or null.
   * @param {string} ns @param {string} key
   * @returns {Promise<{value: any, version: number} | null>}
   */
  async kvGet(ns, key) {
    try {
      const r = await this.#call('GET', `/v1/kv/${encodeURIComponent(ns)}/${encodeURIComponent(key)}`);
      return { value: r.json(), version: Number((r.headers.get('etag') ?? '').replace(/^W\//, '').replace(/"/g, '')) };
    } catch (e) {
      if (e instanceof KeelApiError && e.status === 404) return null;
      throw e;
    }
  }
}
