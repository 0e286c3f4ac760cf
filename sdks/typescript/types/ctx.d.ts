/** `"7"` or `W/"7"` → 7. @param {string | null} value */
export function parseEtag(value: string | null): number | null;
/** The invocation being run. */
export class Ctx {
    /**
     * Reads the contract's headers (node:http's `req.headers`: lower-case names). A header that is
     * missing reads as empty (calling a function by hand).
     * @param {IncomingHeaders} headers
     * @param {{keelUrl?: string | null}} [options] where Keel is (default: `KEEL_URL`)
     */
    constructor(headers: IncomingHeaders, options?: {
        keelUrl?: string | null;
    });
    /** @type {string} */
    invocationId: string;
    /** 1 for the first attempt, counted across retries and redrives. */
    attempt: number;
    /** @type {string} */
    function: string;
    /** Stable for the invocation across attempts and redrives: pass it downstream. */
    idempotencyKey: string | null;
    /** When Keel stops waiting for this attempt. */
    deadline: Date | null;
    traceparent: string | null;
    tracestate: string | null;
    /** The subscription that delivered the event. */
    subscription: string | null;
    /** @type {EventAttributes | null} The CloudEvent, when this invocation is an event delivery. */
    event: EventAttributes | null;
    /** The attempt's function token (sent with the SDK's calls to Keel; expires at the deadline). */
    token: string | null;
    /** @type {string | null | undefined} */
    _keelUrl: string | null | undefined;
    /** Where Keel is: `KEEL_URL` (or the `keelUrl` option), read when first needed. */
    get keelUrl(): string | null;
    /** Milliseconds left before the deadline (0 once passed; null without a deadline). */
    remainingMs(): number | null;
    /** Headers for a call to Keel: the function token. @returns {Record<string, string>} */
    keelHeaders(): Record<string, string>;
    /**
     * Reads `key` in namespace `ns` from Keel's KV: `{value, version}`, or null when absent.
     * Keel unreachable or answering an error → Retryable; a value that is not JSON → Permanent.
     * @template [T=unknown]
     * @param {string} ns @param {string} key
     * @returns {Promise<{value: T, version: number} | null>}
     */
    kvGet<T = unknown>(ns: string, key: string): Promise<{
        value: T;
        version: number;
    } | null>;
    /**
     * Calls `name`, a dependency the function declares, through Keel's egress
     * (`{KEEL_URL}/v1/egress/{name}{path}` with the function token, `keel-invocation-id` and trace
     * context), so that Keel's breaker, bulkhead, rate limit, timeout and retries protect it.
     * @param {string} name
     */
    dependency(name: string): Dependency;
}
export type EventAttributes = {
    id: string;
    type: string;
    source: string;
    specversion: string;
    subject: string | null;
    time: string | null;
    datacontenttype: string | null;
};
export type IncomingHeaders = Record<string, string | string[] | undefined>;
import { Dependency } from './egress.js';
