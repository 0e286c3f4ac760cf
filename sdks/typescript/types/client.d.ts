/** An answer of Keel (or of the function) that is not a success. */
export class KeelApiError extends Error {
    /** @param {number} status @param {Headers} headers @param {string} body */
    constructor(status: number, headers: Headers, body: string);
    status: number;
    headers: Headers;
    body: string;
    /** The RFC 9457 problem (or the function's JSON answer), when the body is JSON. */
    problem: any;
    invocationId: any;
    retryAfterSecs: number | null;
}
/** A function's answer to a sync invoke, or a stored result. */
export class InvokeResult {
    /** @param {number} status @param {Headers} headers @param {Buffer} body */
    constructor(status: number, headers: Headers, body: Buffer);
    status: number;
    headers: Headers;
    body: Buffer<ArrayBufferLike>;
    contentType: string | null;
    invocationId: string | null;
    attempts: number | null;
    /** True when Keel replayed the stored answer of an earlier request with this Idempotency-Key. */
    replayed: boolean;
    text(): string;
    /** @returns {any} */
    json(): any;
}
export class KeelClient {
    /**
     * @param {{url?: string, apiKey?: string | null, fetch?: typeof fetch}} [options]
     *   default: `KEEL_URL` (or http://127.0.0.1:7733) and `KEEL_API_KEY`
     */
    constructor(options?: {
        url?: string;
        apiKey?: string | null;
        fetch?: typeof fetch;
    });
    url: string;
    apiKey: string | null;
    fetch: typeof fetch;
    /**
     * Sync invoke: waits for the function's answer (Keel retries transient failures within the
     * deadline). Throws KeelApiError for a 4xx/5xx (the function's own 4xx, 502 retries exhausted,
     * 504 deadline, 503/429 shed). A string or bytes payload is sent as is.
     * @param {string} fn @param {unknown} payload @param {CallOptions} [options]
     */
    invoke(fn: string, payload: unknown, options?: CallOptions): Promise<InvokeResult>;
    /**
     * Async invoke: `{id, status: "queued"}` once durable; `delay` (`30s`) schedules it later.
     * @param {string} fn @param {unknown} payload @param {AsyncOptions} [options]
     * @returns {Promise<{id: string, status: string, replayed: boolean}>}
     */
    invokeAsync(fn: string, payload: unknown, options?: AsyncOptions): Promise<{
        id: string;
        status: string;
        replayed: boolean;
    }>;
    /**
     * Publishes `data` on `topic` (Keel wraps it: type = topic, a generated id); with `id`,
     * `type`, `source` or `subject`, as a CloudEvent (same source + id again is accepted once).
     * @param {string} topic @param {unknown} data @param {PublishOptions} [options]
     * @returns {Promise<{ids: string[]}>}
     */
    publish(topic: string, data: unknown, options?: PublishOptions): Promise<{
        ids: string[];
    }>;
    /** @param {string} id @returns {Promise<Invocation>} */
    getInvocation(id: string): Promise<Invocation>;
    /** The stored answer of a succeeded invocation. @param {string} id */
    result(id: string): Promise<InvokeResult>;
    /**
     * Polls the invocation until it ends: its result when it succeeded; a KeelApiError (status 0
     * and the invocation as `problem`) when it ended otherwise or `timeoutMs` passed.
     * @param {string} id @param {{timeoutMs?: number, intervalMs?: number}} [options]
     */
    waitForResult(id: string, options?: {
        timeoutMs?: number;
        intervalMs?: number;
    }): Promise<InvokeResult>;
    /**
     * Reads KV (needs a key with `kv:NS:read` or `read`): `{value, version}` or null.
     * @param {string} ns @param {string} key
     * @returns {Promise<{value: any, version: number} | null>}
     */
    kvGet(ns: string, key: string): Promise<{
        value: any;
        version: number;
    } | null>;
    #private;
}
export type CallOptions = {
    idempotencyKey?: string;
    headers?: Record<string, string>;
    contentType?: string;
    signal?: AbortSignal;
};
export type AsyncOptions = CallOptions & {
    delay?: string;
};
export type PublishOptions = CallOptions & {
    id?: string;
    type?: string;
    source?: string;
    subject?: string;
};
export type Invocation = {
    id: string;
    function: string;
    status: string;
    attempts: unknown[];
    result?: unknown;
    result_status?: number;
    error?: string | null;
    [k: string]: unknown;
};
