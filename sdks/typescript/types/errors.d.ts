/**
 * A duration as humantime writes it (`2s`, `1s 500ms`), for default messages.
 * @param {number} ms
 */
export function formatDuration(ms: number): string;
/** Why an invocation did not succeed, and whether Keel should try again. */
export class KeelError extends Error {
    /**
     * @param {string} message
     * @param {number} status
     * @param {number | null} [retryAfterSecs]
     */
    constructor(message: string, status: number, retryAfterSecs?: number | null);
    /** The HTTP status this error is answered with. */
    status: number;
    /** The `Retry-After` header value in whole seconds, if any. */
    retryAfterSecs: number | null;
    /** Whether Keel will retry the invocation. */
    get retryable(): boolean;
    /**
     * Answers with another status of the same class: a permanent error takes a 4xx Keel does not
     * retry (not 408, 425 or 429), a retryable one a 5xx. Other values are ignored.
     * @param {number} status
     * @returns {this}
     */
    withStatus(status: number): this;
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
    constructor(message?: string | {
        after?: number | null;
        status?: number;
    }, options?: {
        after?: number | null;
        status?: number;
    });
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
    constructor(message: string, options?: {
        status?: number | null;
    });
}
/** A malformed request: 400, not retried. */
export class BadRequest extends KeelError {
    /** @param {string} message */
    constructor(message: string);
}
