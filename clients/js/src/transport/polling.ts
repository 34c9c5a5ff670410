import { CoursecastError, toError } from "../errors.js";
import { Emitter } from "../emitter.js";
import type { Http } from "../http.js";
import type { Streams, Sequenced } from "../streams/cursors.js";
import type { Page } from "../types.js";

export type PollingEvents = {
  /** A poll was answered. */
  healthy: [];
  /** A poll failed and will be retried. */
  failing: [err: CoursecastError];
  /** A stream was refused for good (authorization, token): its loop stopped. */
  refused: [key: string, err: CoursecastError];
};

interface Loop {
  key: string;
  path: string;
  controller: AbortController;
  /** Settled by the first answer (or refusal) of this loop. */
  first: Promise<number>;
}

/**
 * HTTP long polling of the stored streams (`GET /api/realtime/...?since=&wait=`),
 * one loop per stream, each resuming from the stream's cursor. Pages go to the same
 * `Streams` as socket events, so the app sees one ordered, deduplicated sequence
 * whichever transport carried it.
 */
export class PollingTransport extends Emitter<PollingEvents> {
  #http: Http;
  #streams: Streams;
  #waitSeconds: number;
  #delay: (attempt: number) => number;
  #loops = new Map<string, Loop>();
  #stopped = false;

  constructor(http: Http, streams: Streams, waitSeconds: number, delay: (attempt: number) => number) {
    super();
    this.#http = http;
    this.#streams = streams;
    this.#waitSeconds = waitSeconds;
    this.#delay = delay;
  }

  /**
   * Polls stream `key` at `path` until `unwatch` or `stop`. Resolves with the cursor
   * once the first answer came; rejects if the stream is refused.
   */
  watch(key: string, path: string): Promise<number> {
    const existing = this.#loops.get(key);
    if (existing) return existing.first;
    const controller = new AbortController();
    let settle!: { resolve: (cursor: number) => void; reject: (err: CoursecastError) => void };
    const first = new Promise<number>((resolve, reject) => {
      settle = { resolve, reject };
    });
    first.catch(() => {}); // the caller may not be listening
    const loop: Loop = { key, path, controller, first };
    this.#loops.set(key, loop);
    void this.#run(loop, settle);
    return first;
  }

  unwatch(key: string): void {
    const loop = this.#loops.get(key);
    if (!loop) return;
    this.#loops.delete(key);
    loop.controller.abort();
  }

  stop(): void {
    this.#stopped = true;
    for (const key of [...this.#loops.keys()]) this.unwatch(key);
  }

  async #run(
    loop: Loop,
    settle: { resolve: (cursor: number) => void; reject: (err: CoursecastError) => void },
  ): Promise<void> {
    const { key, path, controller } = loop;
    const signal = controller.signal;
    let failures = 0;
    let settled = false;
    while (!signal.aborted && !this.#stopped) {
      try {
        let since = this.#streams.cursor(key);
        if (since === undefined) {
          // Joined without `since` and never seen over a socket: start at the head,
          // as a socket `join` without `since` does.
          since = await this.#head(path, signal);
          this.#streams.track(key, since);
        }
        const wait = settled ? this.#waitSeconds : 0;
        const page = await this.#http.request<Page<Sequenced>>("GET", `${path}?since=${since}&wait=${wait}`, {
          signal,
          timeoutMs: (wait + 15) * 1000,
        });
        if (signal.aborted) return;
        failures = 0;
        this.emit("healthy");
        this.#streams.page(key, page.events, !page.hasMore);
        if (!settled) {
          settled = true;
          settle.resolve(this.#streams.cursor(key) ?? page.cursor);
        }
      } catch (e) {
        if (signal.aborted || this.#stopped) return;
        const err = toError(e);
        if (!err.transient) {
          this.#loops.delete(key);
          settle.reject(err);
          this.emit("refused", key, err);
          return;
        }
        failures += 1;
        this.emit("failing", err);
        await sleep(this.#delay(failures), signal);
      }
    }
  }

  /** The stream's head: the cursor after its last page. */
  async #head(path: string, signal: AbortSignal): Promise<number> {
    let since = 0;
    for (;;) {
      const page = await this.#http.request<Page<Sequenced>>("GET", `${path}?since=${since}&limit=1000&wait=0`, {
        signal,
      });
      since = page.cursor;
      if (!page.hasMore) return since;
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
