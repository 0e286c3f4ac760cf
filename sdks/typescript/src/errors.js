// Errors a handler throws, and the status each becomes under Keel's function contract: Keel
// retries 408, 425, 429 and 5xx (honouring Retry-After), and dead-letters other 4xx.

/** @param {number} s */
const isPermanentStatus = (s) => s >= 400 && s < 500 && s !== 408 && s !== 425 && s !== 429;

/**
 * A duration as humantime writes it (`2s`, `1s 500ms`), for default messages.
 * @param {number} ms
 */
export function formatDuration(ms) {
  if (ms <= 0) return '0s';
  let ns = Math.round(ms * 1e6);
  /** @type {[string, number][]} */
  const units = [['d', 86400e9], ['h', 3600e9], ['m', 60e9], ['s', 1e9], ['ms', 1e6], ['us', 1e3], ['ns', 1]];
  const parts = [];
  for (const [unit, size] of units) {
    const n = Math.floor(ns / size);
    if (n > 0) parts.push(`${n}${unit}`);
    ns -= n * size;
  }
  return parts.join(' ');
}

/** Why an invocation did not succeed, and whether Keel should try again. */
export class KeelError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   * @param {number | null} [retryAfterSecs]
   */
  constructor(message, status, retryAfterSecs = null) {
    super(message);
    this.name = new.target.name;
    /** The HTTP status this error is answered with. */
    this.status = status;
    /** The `Retry-After` header value in whole seconds, if any. */
    this.retryAfterSecs = retryAfterSecs;
  }

  /** Whether Keel will retry the invocation. */
  get retryable() {
    return this.status >= 500 || this.status === 408 || this.status === 425 || this.status === 429;
  }

  /**
   * Answers with another status of the same class: a permanent error takes a 4xx Keel does not
   * retry (not 408, 425 or 429), a retryable one a 5xx. Other values are ignored.
   * @param {number} status
   * @returns {this}
   */
  withStatus(status) {
    const fits = isPermanentStatus(this.status) ? isPermanentStatus(status) : status >= 500 && status < 600;
    if (fits) this.status = status;
    return this;
  }
}

/**
 * A failure another attempt may not have: 503, retried after Keel's backoff; with `after`
 * (seconds), 503 + `Retry-After` (whole seconds, rounded up), honoured by Keel as the least delay.
 */
export class Retryable extends KeelError {
  /**
   * @param {string | {after?: number | null, status?: number}} [message]
   * @param {{after?: number | null, status?: number}} [options]
   */
  constructor(message, options) {
    if (typeof message === 'object' && message !== null) {
      options = message;
      message = undefined;
    }
    const after = options?.after ?? null;
    const text = message ?? (after !== null ? `retry after ${formatDuration(after * 1000)}` : 'retryable failure');
    super(text, 503, after !== null ? Math.ceil(Math.max(0, after)) : null);
    if (options?.status !== undefined) this.withStatus(options.status);
  }
}

/**
 * A failure no retry will fix (invalid input, a business rule): 422 by default (or a 4xx of your
 * choice that Keel does not retry); an async invocation goes to the dead-letter queue.
 */
export class Permanent extends KeelError {
  /**
   * @param {string} message
   * @param {{status?: number | null}} [options]
   */
  constructor(message, options) {
    super(message, 422);
    if (options?.status != null) this.withStatus(options.status);
  }
}

/** A malformed request: 400, not retried. */
export class BadRequest extends KeelError {
  /** @param {string} message */
  constructor(message) {
    super(message, 400);
  }
}
