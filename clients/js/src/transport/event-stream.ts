/**
 * A parser of the `text/event-stream` format (the HTML standard's "Server-sent
 * events", section "Interpreting an event stream"), for reading SSE over `fetch`:
 * `EventSource` cannot send an `Authorization` header, so the client reads the body
 * itself and needs the same interpretation a browser applies.
 *
 * Fed decoded text in chunks of any size (a line, a field, even a CRLF may be split
 * between chunks), it returns what each complete line produced: dispatched events,
 * `retry` values and comments (the server's heartbeat is a comment).
 */

export type EventStreamRecord =
  | { kind: "event"; event: string; data: string; id: string }
  | { kind: "retry"; ms: number }
  | { kind: "comment"; text: string };

export class EventStreamParser {
  #buffer = "";
  /** The previous chunk ended in CR: a LF starting the next one belongs to that line break. */
  #afterCr = false;
  #event = "";
  #data: string[] = [];
  /** The last event ID; kept across events, as the standard says (an `id` field changes it). */
  #lastId = "";

  /** The ID the next event will carry (what a reconnection sends as `Last-Event-ID`). */
  get lastEventId(): string {
    return this.#lastId;
  }

  /** Parses `text`; returns the records of every line it completed, in order. */
  push(text: string): EventStreamRecord[] {
    if (this.#afterCr && text.startsWith("\n")) text = text.slice(1);
    this.#afterCr = false;
    this.#buffer += text;
    const out: EventStreamRecord[] = [];
    let start = 0;
    for (;;) {
      const cr = this.#buffer.indexOf("\r", start);
      const lf = this.#buffer.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      this.#line(this.#buffer.slice(start, end), out);
      if (this.#buffer[end] === "\r") {
        if (end + 1 === this.#buffer.length) this.#afterCr = true;
        else if (this.#buffer[end + 1] === "\n") {
          start = end + 2;
          continue;
        }
      }
      start = end + 1;
    }
    this.#buffer = this.#buffer.slice(start);
    return out;
  }

  /**
   * The stream ended. An event not yet terminated by a blank line is discarded, as
   * the standard says: the connection may have been cut in the middle of it.
   */
  end(): void {
    this.#buffer = "";
    this.#afterCr = false;
    this.#event = "";
    this.#data = [];
  }

  #line(line: string, out: EventStreamRecord[]): void {
    if (line === "") {
      this.#dispatch(out);
      return;
    }
    if (line.startsWith(":")) {
      out.push({ kind: "comment", text: line.slice(1).replace(/^ /, "") });
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    switch (field) {
      case "event":
        this.#event = value;
        break;
      case "data":
        this.#data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.#lastId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) out.push({ kind: "retry", ms: Number(value) });
        break;
      // Any other field is ignored.
    }
  }

  #dispatch(out: EventStreamRecord[]): void {
    const data = this.#data;
    const event = this.#event || "message";
    this.#data = [];
    this.#event = "";
    if (data.length === 0) return; // no data field: nothing is dispatched
    out.push({ kind: "event", event, data: data.join("\n"), id: this.#lastId });
  }
}
