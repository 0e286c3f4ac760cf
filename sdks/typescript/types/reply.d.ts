/** A successful answer other than a plain JSON value. */
export class Reply {
    /** 200 (or `status`) with `value` as JSON. @param {unknown} value @param {number} [status] */
    static json(value: unknown, status?: number): Reply;
    /** 200 (or `status`) with a plain-text body. @param {string} text @param {number} [status] */
    static text(text: string, status?: number): Reply;
    /** 204, no body. */
    static empty(): Reply;
    /**
     * @param {number} status
     * @param {string | null} contentType
     * @param {string | Uint8Array} body
     */
    constructor(status: number, contentType: string | null, body: string | Uint8Array);
    status: number;
    contentType: string | null;
    body: string | Uint8Array<ArrayBufferLike>;
    /** @param {number} status */
    withStatus(status: number): this;
}
