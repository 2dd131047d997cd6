/*
 * A small Server-Sent Events parser for fetch() bodies.
 *
 * EventSource can only GET and cannot send a JSON body, so the page reads the
 * stream itself and needs a parser that follows the WHATWG event-stream rules
 * exactly: arbitrary chunking, LF / CRLF / CR line endings (even a CR and its
 * LF in different reads), comments, multi-line data, `id:` and `retry:`, and
 * UTF-8 characters split across reads. It has no DOM dependencies so that a
 * test harness in Node can import it as is.
 *
 * Cost is linear in the input: each chunk is scanned once, and a line that
 * spans many chunks is kept as a list of pieces joined once when it ends.
 */

const LINE_BREAK = /[\r\n]/g;

export class SSEParser {
  #decoder = new TextDecoder("utf-8");
  #pieces = []; // the current, unterminated line
  #afterCR = false; // a CR ended the last line; an LF right after it belongs to it
  #started = false;
  #data = [];
  #type = "";
  #ownId = null; // the id set by the event being built, if any
  #events = [];

  /** The last event ID buffer: it persists across events, as in EventSource. */
  lastEventId = "";
  /** The reconnection time in ms the server asked for with `retry:`, if any. */
  retry = null;

  /**
   * Parses a chunk (bytes, or already decoded text) and returns the events it
   * completed: `{ type, data, id, lastEventId }`, where `id` is the id given by
   * this event itself (null if it had none) and `lastEventId` follows the
   * WHATWG rules (it carries over from earlier events).
   */
  feed(chunk) {
    if (typeof chunk === "string") {
      this.#scan(chunk);
    } else {
      // TextDecoder drops a leading BOM from bytes itself; only text fed directly still has one.
      this.#started = true;
      this.#scan(this.#decoder.decode(chunk, { stream: true }));
    }
    return this.#take();
  }

  /** Ends the stream. An event without its closing blank line is discarded, per the spec. */
  end() {
    this.#scan(this.#decoder.decode());
    this.#pieces = [];
    this.#resetEvent();
    return this.#take();
  }

  #take() {
    const events = this.#events;
    this.#events = [];
    return events;
  }

  #scan(text) {
    if (!text) return;
    let start = 0;
    if (!this.#started) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) start = 1;
    }
    if (this.#afterCR) {
      this.#afterCR = false;
      if (text.charCodeAt(start) === 0x0a) start += 1;
    }
    LINE_BREAK.lastIndex = start;
    let match;
    while ((match = LINE_BREAK.exec(text)) !== null) {
      const end = match.index;
      this.#pieces.push(text.slice(start, end));
      const line = this.#pieces.length === 1 ? this.#pieces[0] : this.#pieces.join("");
      this.#pieces = [];
      this.#line(line);
      start = end + 1;
      if (text.charCodeAt(end) === 0x0d) {
        if (start === text.length) this.#afterCR = true;
        else if (text.charCodeAt(start) === 0x0a) start += 1;
      }
      LINE_BREAK.lastIndex = start;
    }
    if (start < text.length) this.#pieces.push(text.slice(start));
  }

  #line(line) {
    if (line === "") return this.#dispatch();
    if (line.charCodeAt(0) === 0x3a) return; // a comment such as ": ping"
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    switch (field) {
      case "event":
        this.#type = value;
        break;
      case "data":
        this.#data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) {
          this.lastEventId = value;
          this.#ownId = value;
        }
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default: // unknown fields are ignored
    }
  }

  #dispatch() {
    if (this.#data.length > 0) {
      this.#events.push({
        type: this.#type || "message",
        data: this.#data.join("\n"),
        id: this.#ownId,
        lastEventId: this.lastEventId,
      });
    }
    this.#resetEvent();
  }

  #resetEvent() {
    this.#data = [];
    this.#type = "";
    this.#ownId = null;
  }
}

/**
 * Reads a fetch() response body as events. Errors from the reader (a dropped
 * connection, an abort) propagate to the caller, which decides what they mean.
 */
export async function* readEvents(body, parser = new SSEParser()) {
  const reader = body.getReader();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* parser.feed(value);
    }
    finished = true;
    yield* parser.end();
  } finally {
    // A consumer that stops early (after `[DONE]`, say) should not leave the connection open.
    if (!finished) reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
