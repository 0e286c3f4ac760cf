/**
 * A node:http request handler that runs `fn` for each invocation.
 * @param {Handler} fn
 * @param {HandlerOptions} [options]
 * @returns {(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void}
 */
export function createHandler(fn: Handler, options?: HandlerOptions): (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void;
/**
 * Serves `fn` on `host:port` (default 127.0.0.1:$PORT, 8080 without PORT) until SIGTERM or
 * SIGINT, then stops accepting and lets requests in flight finish. Resolves once listening.
 * @param {Handler} fn
 * @param {HandlerOptions & {port?: number, host?: string, signals?: boolean}} [options]
 * @returns {Promise<import('node:http').Server>}
 */
export function serve(fn: Handler, options?: HandlerOptions & {
    port?: number;
    host?: string;
    signals?: boolean;
}): Promise<import("node:http").Server>;
/** One invocation: its context and the payload as received. */
export class Request {
    /** @param {Ctx} ctx @param {Buffer} body @param {string | null} contentType */
    constructor(ctx: Ctx, body: Buffer, contentType: string | null);
    ctx: Ctx;
    /** The payload as received. */
    body: Buffer<ArrayBufferLike>;
    contentType: string | null;
    /** The payload as UTF-8 text. */
    text(): string;
    /** The payload as JSON; one that does not parse is a BadRequest (400, not retried). @returns {any} */
    json(): any;
}
export type Handler = (req: Request) => unknown;
export type HandlerOptions = {
    keelUrl?: string | null;
    onError?: (error: unknown, req: Request) => void;
};
import { Ctx } from './ctx.js';
