// Effects: KV writes with version preconditions and events to publish, committed by Keel
// atomically with the invocation's completion, or not at all.

/** The content type of an effects envelope. */
export const EFFECTS_CONTENT_TYPE = 'application/vnd.keel.effects+json';

/**
 * @typedef {{ns: string, key: string, value?: unknown, if_absent?: true, if_version?: number, delete?: true}} KvWrite
 * @typedef {{topic: string, type: string, subject?: string, data?: unknown}} EventOut
 * @typedef {{type?: string, subject?: string, data?: unknown}} EmitOptions
 */

/** Builds the `application/vnd.keel.effects+json` envelope; return it from the handler. */
export class Effects {
  constructor() {
    /** @type {number} */
    this._status = 200;
    /** @type {unknown} */
    this._result = null;
    /** @type {KvWrite[]} */
    this._kv = [];
    /** @type {EventOut[]} */
    this._events = [];
  }

  /** @param {number} status the status a sync caller sees (a 2xx) */
  status(status) {
    this._status = status;
    return this;
  }

  /** @param {unknown} result the invocation's result, as JSON */
  result(result) {
    this._result = result === undefined ? null : result;
    return this;
  }

  /**
   * Writes `value` whatever the key holds; `{ifAbsent: true}` only if the key does not exist;
   * `{ifVersion: n}` only if the key is still at version n (read with `ctx.kvGet`).
   * @param {string} ns @param {string} key @param {unknown} value
   * @param {{ifAbsent?: boolean, ifVersion?: number | null}} [options]
   */
  put(ns, key, value, options) {
    /** @type {KvWrite} */
    const write = { ns, key, value: value === undefined ? null : value };
    if (options?.ifAbsent) write.if_absent = true;
    else if (options?.ifVersion != null) write.if_version = options.ifVersion;
    this._kv.push(write);
    return this;
  }

  /** @param {string} ns @param {string} key @param {unknown} value */
  putIfAbsent(ns, key, value) {
    return this.put(ns, key, value, { ifAbsent: true });
  }

  /** @param {string} ns @param {string} key @param {unknown} value @param {number} version */
  putIfVersion(ns, key, value, version) {
    return this.put(ns, key, value, { ifVersion: version });
  }

  /**
   * Deletes the key; with `{ifVersion: n}` only if it is still at version n.
   * @param {string} ns @param {string} key @param {{ifVersion?: number | null}} [options]
   */
  delete(ns, key, options) {
    /** @type {KvWrite} */
    const write = { ns, key };
    if (options?.ifVersion != null) write.if_version = options.ifVersion;
    write.delete = true;
    this._kv.push(write);
    return this;
  }

  /**
   * Publishes an event on `topic` when the invocation completes; its CloudEvent `type` defaults
   * to the topic.
   * @param {string} topic @param {EmitOptions} [options]
   */
  emit(topic, options) {
    /** @type {EventOut} */
    const event = { topic, type: options?.type ?? topic };
    if (options?.subject !== undefined) event.subject = options.subject;
    if (options && 'data' in options) event.data = options.data === undefined ? null : options.data;
    this._events.push(event);
    return this;
  }

  /** The envelope as a JSON value. */
  toJSON() {
    /** @type {{status: number, result: unknown, kv?: KvWrite[], events?: EventOut[]}} */
    const envelope = { status: this._status, result: this._result };
    if (this._kv.length > 0) envelope.kv = this._kv;
    if (this._events.length > 0) envelope.events = this._events;
    return envelope;
  }
}
