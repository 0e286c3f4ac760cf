// Calling a dependency through Keel's egress: `ANY {KEEL_URL}/v1/egress/{dependency}{path}`.
// Keel answers with the dependency's answer as it is, or with a problem of its own
// (`urn:keel:problem:breaker-open`, …), which is thrown as an EgressError: a KeelError whose
// status tells Keel when to retry the attempt, so that an uncaught one does the right thing.

import { KeelError, Retryable, Permanent, formatDuration } from './errors.js';

/** Keel's own answers: problem type → [status, description]. */
const KEEL_ANSWERS = /** @type {const} */ ({
  'breaker-open': [503, 'breaker open'],
  'rate-limited': [429, 'rate limited'],
  'bulkhead-full': [503, 'bulkhead full'],
  'dependency-timeout': [504, 'timed out'],
  'dependency-unreachable': [502, 'unreachable'],
  forbidden: [403, 'forbidden'],
});

/**
 * @typedef {'breaker-open' | 'rate-limited' | 'bulkhead-full' | 'dependency-timeout' |
 *   'dependency-unreachable' | 'forbidden' | 'invalid-request' | 'keel-unavailable'} EgressErrorKind
 * @typedef {{query?: Record<string, string> | [string, string][], headers?: Record<string, string>,
 *   body?: string | Uint8Array, json?: unknown}} DependencyRequestOptions
 */

/** `Retry-After` in seconds. @param {Headers} headers */
function retryAfter(headers) {
  const v = headers.get('retry-after');
  return v !== null && /^\s*\d+\s*$/.test(v) ? Number(v) : null;
}

/**
 * Why a call through egress got no answer from the dependency. Thrown out of a handler it
 * answers: breaker-open, rate-limited, bulkhead-full → 503 with Keel's Retry-After; a timeout,
 * an unreachable dependency or Keel → 503; forbidden or an invalid request → 422 (permanent).
 */
export class EgressError extends KeelError {
  /**
   * @param {string} dependency @param {EgressErrorKind} kind @param {string} detail
   * @param {number | null} [retryAfterSecs]
   */
  constructor(dependency, kind, detail, retryAfterSecs = null) {
    const describe = kind in KEEL_ANSWERS
      ? KEEL_ANSWERS[/** @type {keyof typeof KEEL_ANSWERS} */ (kind)][1]
      : kind === 'invalid-request' ? 'invalid request' : 'keel unavailable';
    const permanent = kind === 'forbidden' || kind === 'invalid-request';
    super(`${dependency}: ${describe} (${detail})`, permanent ? 422 : 503, permanent ? null : retryAfterSecs);
    this.dependency = dependency;
    this.kind = kind;
    this.detail = detail;
  }
}

/** The dependency's answer, as it gave it. */
export class DependencyResponse {
  /** @param {number} status @param {Headers} headers @param {Buffer} body */
  constructor(status, headers, body) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }

  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  text() {
    return this.body.toString('utf8');
  }

  /** The body as JSON; one that does not parse is a retryable 502. @returns {any} */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new Retryable(`the dependency's answer (HTTP ${this.status}) is not the expected JSON: ${/** @type {Error} */ (e).message}`, { status: 502 });
    }
  }

  /**
   * This response if 1xx–3xx; otherwise throws the dependency's failure as the function's: 5xx,
   * 408 and 429 retryable (after its Retry-After), other 4xx permanent.
   */
  errorForStatus() {
    const s = this.status;
    if (s < 400) return this;
    const message = `the dependency answered HTTP ${s}`;
    if (s >= 500 || s === 408 || s === 429) throw new Retryable(message, { after: retryAfter(this.headers) });
    throw new Permanent(message);
  }
}

/** A dependency of the function, called through Keel on behalf of the running attempt. */
export class Dependency {
  /**
   * @param {string} name
   * @param {{keelUrl: string | null, invocationId: string, token: string | null,
   *   traceparent: string | null, tracestate: string | null}} ctx
   */
  constructor(name, ctx) {
    this.name = name;
    this.ctx = ctx;
  }

  /**
   * Makes the call: the dependency's answer whatever its status, or throws an EgressError when
   * Keel answered in its stead (or could not be reached).
   * @param {string} method @param {string} path (`/charges`, may carry `?query`)
   * @param {DependencyRequestOptions} [options]
   * @returns {Promise<DependencyResponse>}
   */
  async request(method, path, options = {}) {
    const fail = (/** @type {EgressErrorKind} */ kind, /** @type {string} */ detail) => new EgressError(this.name, kind, detail);
    if (!this.ctx.keelUrl) throw fail('keel-unavailable', 'KEEL_URL is not set: cannot call a dependency');
    let url;
    try {
      const base = new URL(this.ctx.keelUrl);
      base.search = '';
      const prefix = `${base.href.replace(/\/+$/, '')}/v1/egress/${encodeURIComponent(this.name)}`;
      url = new URL(prefix + (path.startsWith('/') ? '' : '/') + path);
      const query = options.query ?? [];
      for (const [k, v] of Array.isArray(query) ? query : Object.entries(query)) url.searchParams.append(k, v);
    } catch (e) {
      throw fail('invalid-request', `path ${JSON.stringify(path)}: ${/** @type {Error} */ (e).message}`);
    }
    /** @type {Record<string, string>} */
    const headers = {};
    for (const [k, v] of Object.entries(options.headers ?? {})) headers[k.toLowerCase()] = v;
    /** @type {string | Uint8Array | undefined} */
    let body = options.body;
    if ('json' in options) {
      body = JSON.stringify(options.json);
      headers['content-type'] = 'application/json';
    }
    if (this.ctx.invocationId) headers['keel-invocation-id'] = this.ctx.invocationId;
    if (this.ctx.token !== null) headers.authorization = `Bearer ${this.ctx.token}`;
    if (!('traceparent' in headers) && this.ctx.traceparent !== null) {
      headers.traceparent = this.ctx.traceparent;
      if (this.ctx.tracestate !== null) headers.tracestate = this.ctx.tracestate;
    }
    let response;
    let bytes;
    try {
      response = await fetch(url, { method, headers, body: method === 'GET' || method === 'HEAD' ? undefined : /** @type {BodyInit | undefined} */ (/** @type {unknown} */ (body)) });
    } catch (e) {
      throw fail('keel-unavailable', `keel unreachable: ${/** @type {Error} */ (e).message}`);
    }
    try {
      bytes = Buffer.from(await response.arrayBuffer());
    } catch (e) {
      throw fail('keel-unavailable', `reading the answer: ${/** @type {Error} */ (e).message}`);
    }
    const problem = keelProblem(response.status, response.headers, bytes);
    if (problem !== null) throw new EgressError(this.name, problem.kind, problem.detail, retryAfter(response.headers));
    return new DependencyResponse(response.status, response.headers, bytes);
  }

  /** @param {string} path @param {DependencyRequestOptions} [options] */
  get(path, options) { return this.request('GET', path, options); }
  /** @param {string} path @param {DependencyRequestOptions} [options] */
  post(path, options) { return this.request('POST', path, options); }
  /** @param {string} path @param {DependencyRequestOptions} [options] */
  put(path, options) { return this.request('PUT', path, options); }
  /** @param {string} path @param {DependencyRequestOptions} [options] */
  patch(path, options) { return this.request('PATCH', path, options); }
  /** @param {string} path @param {DependencyRequestOptions} [options] */
  delete(path, options) { return this.request('DELETE', path, options); }
}

/**
 * Keel's own answer, when the response is one: a problem+json of a type and status Keel answers.
 * @param {number} status @param {Headers} headers @param {Buffer} body
 * @returns {{kind: EgressErrorKind, detail: string} | null}
 */
function keelProblem(status, headers, body) {
  const ct = headers.get('content-type');
  if (ct === null || !ct.trim().toLowerCase().startsWith('application/problem+json')) return null;
  let problem;
  try {
    problem = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  const type = typeof problem?.type === 'string' && problem.type.startsWith('urn:keel:problem:') ? problem.type.slice(17) : null;
  if (type === null || !(type in KEEL_ANSWERS)) return null;
  const kind = /** @type {keyof typeof KEEL_ANSWERS} */ (type);
  if (KEEL_ANSWERS[kind][0] !== status) return null;
  return { kind, detail: typeof problem.detail === 'string' ? problem.detail : '' };
}

export { formatDuration };
