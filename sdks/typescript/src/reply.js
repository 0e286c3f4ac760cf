// What a handler answers when it succeeds: a status, a content type and a body.

/** A successful answer other than a plain JSON value. */
export class Reply {
  /**
   * @param {number} status
   * @param {string | null} contentType
   * @param {string | Uint8Array} body
   */
  constructor(status, contentType, body) {
    this.status = status;
    this.contentType = contentType;
    this.body = body;
  }

  /** 200 (or `status`) with `value` as JSON. @param {unknown} value @param {number} [status] */
  static json(value, status = 200) {
    return new Reply(status, 'application/json', JSON.stringify(value === undefined ? null : value));
  }

  /** 200 (or `status`) with a plain-text body. @param {string} text @param {number} [status] */
  static text(text, status = 200) {
    return new Reply(status, 'text/plain; charset=utf-8', text);
  }

  /** 204, no body. */
  static empty() {
    return new Reply(204, null, '');
  }

  /** @param {number} status */
  withStatus(status) {
    this.status = status;
    return this;
  }
}
