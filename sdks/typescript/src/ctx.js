// Ctx: what Keel tells a function about the invocation it is running, read from the function
// contract's headers; its KV reads and dependency calls go to Keel (KEEL_URL) with the attempt's
// function token.

import { Retryable, Permanent } from './errors.js';
import { Dependency } from './egress.js';

/**
 * @typedef {{id: string, type: string, source: string, specversion: string,
 *   subject: string | null, time: string | null, datacontenttype: string | null}} EventAttributes
 * @typedef {Record<string, string | string[] | undefined>} IncomingHeaders
 */

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$/;

/** @param {string | null} text @returns {Date | null} */
function parseDeadline(text) {
  if (text === null || !RFC3339.test(text)) return null;
  const zoned = /([Zz]|[+-]\d{2}:\d{2})$/.test(text) ? text : `${text}Z`;
  const ms = Date.parse(zoned.replace(' ', 'T'));
  return Number.isNaN(ms) ? null : new Date(ms);
}

/** The invocation being run. */
export class Ctx {
  /**
   * Reads the contract's headers (node:http's `req.headers`: lower-case names). A header that is
   * missing reads as empty (calling a function by hand).
   * @param {IncomingHeaders} headers
   * @param {{keelUrl?: string | null}} [options] where Keel is (default: `KEEL_URL`)
   */
  constructor(headers, options) {
    /** @param {string} name @returns {string | null} */
    const text = (name) => {
      const v = headers[name];
      return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
    };
    /** @type {string} */
    this.invocationId = text('keel-invocation-id') ?? '';
    const attempt = Number(text('keel-attempt'));
    /** 1 for the first attempt, counted across retries and redrives. */
    this.attempt = Number.isInteger(attempt) && attempt >= 0 && /^\d+$/.test(text('keel-attempt') ?? '') ? attempt : 1;
    /** @type {string} */
    this.function = text('keel-function') ?? '';
    /** Stable for the invocation across attempts and redrives: pass it downstream. */
    this.idempotencyKey = text('idempotency-key');
    /** When Keel stops waiting for this attempt. */
    this.deadline = parseDeadline(text('keel-deadline'));
    this.traceparent = text('traceparent');
    this.tracestate = text('tracestate');
    /** The subscription that delivered the event. */
    this.subscription = text('keel-subscription');
    const id = text('ce-id');
    /** @type {EventAttributes | null} The CloudEvent, when this invocation is an event delivery. */
    this.event = id === null ? null : {
      id,
      type: text('ce-type') ?? '',
      source: text('ce-source') ?? '',
      specversion: text('ce-specversion') ?? '1.0',
      subject: text('ce-subject'),
      time: text('ce-time'),
      datacontenttype: text('content-type'),
    };
    const auth = text('authorization');
    /** The attempt's function token (sent with the SDK's calls to Keel; expires at the deadline). */
    this.token = auth !== null && auth.startsWith('Bearer ') ? auth.slice(7) : null;
    /** @type {string | null | undefined} */
    this._keelUrl = options?.keelUrl;
  }

  /** Where Keel is: `KEEL_URL` (or the `keelUrl` option), read when first needed. */
  get keelUrl() {
    if (this._keelUrl === undefined) this._keelUrl = process.env.KEEL_URL ?? null;
    return this._keelUrl;
  }

  /** Milliseconds left before the deadline (0 once passed; null without a deadline). */
  remainingMs() {
    return this.deadline === null ? null : Math.max(0, this.deadline.getTime() - Date.now());
  }

  /** Headers for a call to Keel: the function token. @returns {Record<string, string>} */
  keelHeaders() {
    return this.token === null ? {} : { authorization: `Bearer ${this.token}` };
  }

  /**
   * Reads `key` in namespace `ns` from Keel's KV: `{value, version}`, or null when absent.
   * Keel unreachable or answering an error → Retryable; a value that is not JSON → Permanent.
   * @template [T=unknown]
   * @param {string} ns @param {string} key
   * @returns {Promise<{value: T, version: number} | null>}
   */
  async kvGet(ns, key) {
    if (!this.keelUrl) throw new Retryable('KEEL_URL is not set: cannot read KV');
    const url = `${this.keelUrl.replace(/\/+$/, '')}/v1/kv/${encodeURIComponent(ns)}/${encodeURIComponent(key)}`;
    let response;
    try {
      response = await fetch(url, { headers: this.keelHeaders() });
    } catch (e) {
      throw new Retryable(`kv ${ns}/${key}: keel unreachable: ${/** @type {Error} */ (e).message}`);
    }
    const body = await response.text().catch((e) => {
      throw new Retryable(`kv ${ns}/${key}: reading the answer: ${e.message}`);
    });
    if (response.status === 404) return null;
    if (response.status !== 200) throw new Retryable(`kv ${ns}/${key}: keel answered HTTP ${response.status}`);
    const version = parseEtag(response.headers.get('etag'));
    if (version === null) throw new Retryable(`kv ${ns}/${key}: no ETag version`);
    try {
      return { value: /** @type {T} */ (JSON.parse(body)), version };
    } catch (e) {
      throw new Permanent(`kv ${ns}/${key} does not hold JSON: ${/** @type {Error} */ (e).message}`);
    }
  }

  /**
   * Calls `name`, a dependency the function declares, through Keel's egress
   * (`{KEEL_URL}/v1/egress/{name}{path}` with the function token, `keel-invocation-id` and trace
   * context), so that Keel's breaker, bulkhead, rate limit, timeout and retries protect it.
   * @param {string} name
   */
  dependency(name) {
    return new Dependency(name, this);
  }
}

/** `"7"` or `W/"7"` → 7. @param {string | null} value */
export function parseEtag(value) {
  if (value === null) return null;
  const m = /^\s*(?:W\/)?"?(\d+)"?\s*$/.exec(value);
  return m ? Number(m[1]) : null;
}
