/**
 * @typedef {(items: Request[]) => BatchReply | Promise<BatchReply>} BatchHandler
 * @typedef {{keelUrl?: string | null, onError?: (error: unknown) => void}} BatchHandlerOptions
 */
/**
 * The items of a batch, each a Request whose Ctx is the batch's headers with the item's own.
 * @param {import('node:http').IncomingHttpHeaders} headers @param {Buffer} body
 * @param {BatchHandlerOptions | undefined} options @returns {Request[]}
 */
export function readItems(headers: import("node:http").IncomingHttpHeaders, body: Buffer, options: BatchHandlerOptions | undefined): Request[];
/**
 * A node:http request handler that runs the batch handler `fn` for each batch (and each sync
 * call, as a batch of one).
 * @param {BatchHandler} fn
 * @param {BatchHandlerOptions} [options]
 * @returns {(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void}
 */
export function createBatchHandler(fn: BatchHandler, options?: BatchHandlerOptions): (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void;
/**
 * Serves the batch handler `fn` on `host:port` (default 127.0.0.1:$PORT) until SIGTERM or SIGINT:
 * the `serve` of a batch function. Resolves once listening.
 * @param {BatchHandler} fn
 * @param {BatchHandlerOptions & {port?: number, host?: string}} [options]
 * @returns {Promise<import('node:http').Server>}
 */
export function serveBatch(fn: BatchHandler, options?: BatchHandlerOptions & {
    port?: number;
    host?: string;
}): Promise<import("node:http").Server>;
/** The content type of a batch request. */
export const BATCH_CONTENT_TYPE: "application/vnd.keel.batch+json";
/** What a batch handler answers: which items failed, and what the others produced. */
export class BatchReply {
    /** @type {[string, KeelError][]} */
    _failed: [string, KeelError][];
    /** @type {[string, unknown][]} */
    _results: [string, unknown][];
    /** @type {[string, Effects][]} */
    _effects: [string, Effects][];
    /**
     * Item `id` failed: retried after Keel's backoff (no sooner than the error's retry-after) when
     * the error is retryable, else dead-lettered.
     * @param {string} id @param {KeelError} error @returns {this}
     */
    fail(id: string, error: KeelError): this;
    /** Item `id` succeeded with `result` (JSON). @param {string} id @param {unknown} result @returns {this} */
    result(id: string, result: unknown): this;
    /** Item `id` succeeded with `effects`, committed with its completion. @param {string} id @param {Effects} effects @returns {this} */
    effects(id: string, effects: Effects): this;
    /** The answer as Keel reads it. @returns {Record<string, unknown>} */
    toJSON(): Record<string, unknown>;
}
export type BatchHandler = (items: Request[]) => BatchReply | Promise<BatchReply>;
export type BatchHandlerOptions = {
    keelUrl?: string | null;
    onError?: (error: unknown) => void;
};
import { Request } from './server.js';
import { KeelError } from './errors.js';
import { Effects } from './effects.js';
