/** The content type of an effects envelope. */
export const EFFECTS_CONTENT_TYPE: "application/vnd.keel.effects+json";
/**
 * @typedef {{ns: string, key: string, value?: unknown, if_absent?: true, if_version?: number, delete?: true}} KvWrite
 * @typedef {{topic: string, type: string, subject?: string, data?: unknown}} EventOut
 * @typedef {{type?: string, subject?: string, data?: unknown}} EmitOptions
 */
/** Builds the `application/vnd.keel.effects+json` envelope; return it from the handler. */
export class Effects {
    /** @type {number} */
    _status: number;
    /** @type {unknown} */
    _result: unknown;
    /** @type {KvWrite[]} */
    _kv: KvWrite[];
    /** @type {EventOut[]} */
    _events: EventOut[];
    /** @param {number} status the status a sync caller sees (a 2xx) */
    status(status: number): this;
    /** @param {unknown} result the invocation's result, as JSON */
    result(result: unknown): this;
    /**
     * Writes `value` whatever the key holds; `{ifAbsent: true}` only if the key does not exist;
     * `{ifVersion: n}` only if the key is still at version n (read with `ctx.kvGet`).
     * @param {string} ns @param {string} key @param {unknown} value
     * @param {{ifAbsent?: boolean, ifVersion?: number | null}} [options]
     */
    put(ns: string, key: string, value: unknown, options?: {
        ifAbsent?: boolean;
        ifVersion?: number | null;
    }): this;
    /** @param {string} ns @param {string} key @param {unknown} value */
    putIfAbsent(ns: string, key: string, value: unknown): this;
    /** @param {string} ns @param {string} key @param {unknown} value @param {number} version */
    putIfVersion(ns: string, key: string, value: unknown, version: number): this;
    /**
     * Deletes the key; with `{ifVersion: n}` only if it is still at version n.
     * @param {string} ns @param {string} key @param {{ifVersion?: number | null}} [options]
     */
    delete(ns: string, key: string, options?: {
        ifVersion?: number | null;
    }): this;
    /**
     * Publishes an event on `topic` when the invocation completes; its CloudEvent `type` defaults
     * to the topic.
     * @param {string} topic @param {EmitOptions} [options]
     */
    emit(topic: string, options?: EmitOptions): this;
    /** The envelope as a JSON value. */
    toJSON(): {
        status: number;
        result: unknown;
        kv?: KvWrite[];
        events?: EventOut[];
    };
}
export type KvWrite = {
    ns: string;
    key: string;
    value?: unknown;
    if_absent?: true;
    if_version?: number;
    delete?: true;
};
export type EventOut = {
    topic: string;
    type: string;
    subject?: string;
    data?: unknown;
};
export type EmitOptions = {
    type?: string;
    subject?: string;
    data?: unknown;
};
