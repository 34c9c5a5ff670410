import { CoursecastError, toError } from "../errors.js";
import { Emitter } from "../emitter.js";
import type { Tokens } from "../tokens.js";
import { EventStreamParser } from "./event-stream.js";

/** The SSE endpoint (PROTOCOL.md section 2, "Server-sent events"). */
export const SSE_PATH = "/api/realtime/stream";

/** The stored-event names of the stream, one per stream kind. */
export const SSE_EVENT_NAMES = ["message", "annotation", "notification", "progress"] as const;
export type SseEventName = (typeof SSE_EVENT_NAMES)[number];

export interface SseSettings {
  url: string;
  /** An attempt that has not received `ready` after this long fails (a buffering proxy, a hung server). */
  readyTimeoutMs: number;
  /** An open stream that receives nothing, not even the heartbeat comment, this long is reopened. */
  idleTimeoutMs: number;
  /** Backoff before attempt `n` of a reopen (the server's `retry` is the floor). */
  delay: (attempt: number) => number;
  /** The specs to open with (`KIND:ID` or `KIND:ID:SINCE`), asked at every attempt. */
  specs: () => string[];
}

export type SseEvents = {
  /** A connection is up: the cursor each stream starts from. */
  ready: [streams: { stream: string; cursor: number }[]];
  /** A stored event (or a watched progress event), the payload exactly as the socket's. */
  event: [name: SseEventName, payload: unknown];
  /** `session:expiring`: the token of generation `tokenGen` expires soon. */
  expiring: [tokenGen: number];
  /**
   * An attempt failed before `ready`. A transient error (network, timeout, 429, 5xx)
   * is retried with backoff; any other waits for `reconnect()`.
   */
  failure: [err: CoursecastError, tokenGen: number];
  /**
   * An open connection ended: cut, silent too long, or `event: end`. An `UNAVAILABLE`
   * end or a cut is reopened with the last event id; any other code waits for `reconnect()`.
   */
  down: [err: CoursecastError, tokenGen: number];
};

/**
 * One server-sent-events connection carrying all of the client's streams, read with
 * `fetch` and a streaming body (so it can send `Authorization` and `Last-Event-ID`,
 * which `EventSource` cannot), reopened after a drop with the last event id, and
 * reopened with fresh specs when the set of streams changes or a fresh token comes (`reopen()`).
 */
export class SseTransport extends Emitter<SseEvents> {
  #settings: SseSettings;
  #tokens: Tokens;
  #stopped = false;
  #controller?: AbortController;
  /** Resolves the wait of a paused loop (after a refusal) or a backoff sleep. */
  #wake?: () => void;
  #attempt = 0;
  /** The server's `retry` (ms): the least time between a drop and the reopen. */
  #retryMs = 0;
  /** The specs (without cursors) of the last connection and its last event id, to resume it. */
  #resume?: { streams: string; lastId: string };
  #running = false;
  #reopenAsked = false;

  constructor(settings: SseSettings, tokens: Tokens) {
    super();
    this.#settings = settings;
    this.#tokens = tokens;
  }

  start(): void {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    void this.#loop();
  }

  stop(): void {
    this.#stopped = true;
    this.#controller?.abort();
    this.#wake?.();
  }

  /** Reopens now (after the client refreshed the token, or dealt with a refusal). */
  reconnect(): void {
    this.#attempt = 0;
    this.#wake?.();
  }

  /**
   * Closes the connection and opens another at once: the set of streams changed (new
   * specs), or there is a fresher token. Not a drop: nothing is reported.
   */
  reopen(): void {
    this.#reopenAsked = true;
    this.#controller?.abort();
    this.reconnect();
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      this.#reopenAsked = false;
      const outcome = await this.#connect();
      if (this.#stopped) return;
      if (this.#reopenAsked) continue;
      this.#attempt += 1;
      if (outcome.err.transient) {
        // After a drop the server's `retry` is the floor, as EventSource would wait.
        await this.#sleep(Math.max(this.#retryMs, this.#settings.delay(this.#attempt)));
      } else {
        await this.#sleep(Infinity); // until reconnect() or stop()
      }
    }
  }

  /** One connection, from the request to its end; reports through the events and returns why it ended. */
  async #connect(): Promise<{ err: CoursecastError }> {
    const specs = this.#settings.specs();
    const streams = specs.map((spec) => spec.split(":").slice(0, 2).join(":")).join(",");
    const controller = new AbortController();
    this.#controller = controller;
    let ready = false;
    let why: CoursecastError | undefined;
    const abort = (err: CoursecastError) => {
      why ??= err;
      controller.abort();
    };
    let gen = 0;
    let idle: ReturnType<typeof setTimeout> | undefined;
    const readyTimer = setTimeout(
      () => abort(new CoursecastError("TIMEOUT", `SSE: no ready event in ${this.#settings.readyTimeoutMs} ms`)),
      this.#settings.readyTimeoutMs,
    );
    const alive = () => {
      clearTimeout(idle);
      idle = setTimeout(
        () => abort(new CoursecastError("TIMEOUT", `SSE: nothing received for ${this.#settings.idleTimeoutMs} ms`)),
        this.#settings.idleTimeoutMs,
      );
    };
    const fail = (err: CoursecastError) => {
      if (this.#stopped || this.#reopenAsked) return { err };
      this.emit(ready ? "down" : "failure", err, gen);
      return { err };
    };
    try {
      const token = await this.#tokens.get();
      gen = token.gen;
      const headers: Record<string, string> = { accept: "text/event-stream", authorization: `Bearer ${token.value}` };
      // Resume the same streams from the last id; a changed set starts from explicit SINCEs.
      if (this.#resume && this.#resume.streams === streams && this.#resume.lastId) {
        headers["last-event-id"] = this.#resume.lastId;
      }
      const query = specs.map(encodeURIComponent).join(",");
      const response = await fetch(`${this.#settings.url}${SSE_PATH}?streams=${query}`, {
        headers,
        signal: controller.signal,
      });
      if (!response.ok) return fail(await refusal(response));
      if (!/^text\/event-stream/i.test(response.headers.get("content-type") ?? "") || !response.body) {
        await response.body?.cancel().catch(() => {});
        return fail(new CoursecastError("UNAVAILABLE", "SSE: the answer is not an event stream", response.status));
      }
      const parser = new EventStreamParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      alive();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        alive();
        for (const record of parser.push(value)) {
          if (record.kind === "retry") this.#retryMs = record.ms;
          if (record.kind !== "event") continue;
          this.#resume = { streams, lastId: record.id };
          let data: unknown;
          try {
            data = JSON.parse(record.data);
          } catch {
            // Never hand the app a payload without its seq: reopen, and count it as a drop.
            abort(new CoursecastError("UNAVAILABLE", `SSE: the data of a "${record.event}" event is not JSON`));
            break;
          }
          if (record.event === "ready") {
            ready = true;
            clearTimeout(readyTimer);
            this.#attempt = 0;
            this.#tokens.proven(gen);
            this.emit("ready", ((data as { streams?: { stream: string; cursor: number }[] })?.streams ?? []));
          } else if ((SSE_EVENT_NAMES as readonly string[]).includes(record.event)) {
            this.emit("event", record.event as SseEventName, data);
          } else if (record.event === "session:expiring") {
            this.emit("expiring", gen);
          } else if (record.event === "end") {
            const end = data as { code?: string; message?: string } | undefined;
            abort(new CoursecastError(end?.code ?? "UNAVAILABLE", end?.message ?? "SSE: the server ended the stream"));
          }
          if (why || this.#stopped) break;
        }
        if (why || this.#stopped) break;
      }
      await reader.cancel().catch(() => {});
      return fail(why ?? new CoursecastError("NETWORK", "SSE: the server closed the stream"));
    } catch (e) {
      return fail(why ?? toError(e));
    } finally {
      clearTimeout(readyTimer);
      clearTimeout(idle);
      if (this.#controller === controller) this.#controller = undefined;
    }
  }

  /** Waits `ms` (Infinity: until woken), or less if `reconnect()`, `reopen()` or `stop()` wakes it. */
  #sleep(ms: number): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = undefined;
        resolve();
      };
      if (Number.isFinite(ms)) timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }
}

/** The contract's error shape of a refused request, as a typed error. */
async function refusal(response: Response): Promise<CoursecastError> {
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    if (body?.error?.code) return new CoursecastError(body.error.code, body.error.message, response.status);
  } catch {
    // A proxy's error page: judged by its status below.
  }
  const code =
    response.status >= 500
      ? "UNAVAILABLE"
      : response.status === 429
        ? "RATE_LIMITED"
        : response.status === 404
          ? "NOT_FOUND" // a server without the endpoint, behind a proxy that answers for it
          : "NETWORK";
  return new CoursecastError(code, `SSE: answer ${response.status} is not the contract's error shape`, response.status);
}
