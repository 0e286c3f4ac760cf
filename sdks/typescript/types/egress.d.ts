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
    constructor(dependency: string, kind: EgressErrorKind, detail: string, retryAfterSecs?: number | null);
    dependency: string;
    kind: EgressErrorKind;
    detail: string;
}
/** The dependency's answer, as it gave it. */
export class DependencyResponse {
    /** @param {number} status @param {Headers} headers @param {Buffer} body */
    constructor(status: number, headers: Headers, body: Buffer);
    status: number;
    headers: Headers;
    body: Buffer<ArrayBufferLike>;
    get ok(): boolean;
    text(): string;
    /** The body as JSON; one that does not parse is a retryable 502. @returns {any} */
    json(): any;
    /**
     * This response if 1xx–3xx; otherwise throws the dependency's failure as the function's: 5xx,
     * 408 and 429 retryable (after its Retry-After), other 4xx permanent.
     */
    errorForStatus(): this;
}
/** A dependency of the function, called through Keel on behalf of the running attempt. */
export class Dependency {
    /**
     * @param {string} name
     * @param {{keelUrl: string | null, invocationId: string, token: string | null,
     *   traceparent: string | null, tracestate: string | null}} ctx
     */
    constructor(name: string, ctx: {
        keelUrl: string | null;
        invocationId: string;
        token: string | null;
        traceparent: string | null;
        tracestate: string | null;
    });
    name: string;
    ctx: {
        keelUrl: string | null;
        invocationId: string;
        token: string | null;
        traceparent: string | null;
        tracestate: string | null;
    };
    /**
     * Makes the call: the dependency's answer whatever its status, or throws an EgressError when
     * Keel answered in its stead (or could not be reached).
     * @param {string} method @param {string} path (`/charges`, may carry `?query`)
     * @param {DependencyRequestOptions} [options]
     * @returns {Promise<DependencyResponse>}
     */
    request(method: string, path: string, options?: DependencyRequestOptions): Promise<DependencyResponse>;
    /** @param {string} path @param {DependencyRequestOptions} [options] */
    get(path: string, options?: DependencyRequestOptions): Promise<DependencyResponse>;
    /** @param {string} path @param {DependencyRequestOptions} [options] */
    post(path: string, options?: DependencyRequestOptions): Promise<DependencyResponse>;
    /** @param {string} path @param {DependencyRequestOptions} [options] */
    put(path: string, options?: DependencyRequestOptions): Promise<DependencyResponse>;
    /** @param {string} path @param {DependencyRequestOptions} [options] */
    patch(path: string, options?: DependencyRequestOptions): Promise<DependencyResponse>;
    /** @param {string} path @param {DependencyRequestOptions} [options] */
    delete(path: string, options?: DependencyRequestOptions): Promise<DependencyResponse>;
}
export { formatDuration };
export type EgressErrorKind = "breaker-open" | "rate-limited" | "bulkhead-full" | "dependency-timeout" | "dependency-unreachable" | "forbidden" | "invalid-request" | "keel-unavailable";
export type DependencyRequestOptions = {
    query?: Record<string, string> | [string, string][];
    headers?: Record<string, string>;
    body?: string | Uint8Array;
    json?: unknown;
};
import { KeelError } from './errors.js';
import { formatDuration } from './errors.js';
