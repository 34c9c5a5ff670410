import { CoursecastError, toError } from "./errors.js";

/** One write: the socket event and its HTTP twin (same payload, same answer). */
export interface Op {
  namespace: "chat" | "notifications" | "collaboration";
  event: string;
  payload: Record<string, unknown>;
  http: { method: string; path: string; body?: Record<string, unknown> };
}

interface Item {
  op: Op;
  attempts: number;
  resolve: (ack: unknown) => void;
  reject: (err: CoursecastError) => void;
}

/**
 * The outbox: writes wait here until a transport can carry them, go out one at a
 * time in the order they were made, and are retried as they are (a send keeps its
 * `clientMsgId`, so the server answers a retry with the original event) until an
 * answer comes. A refusal (validation, authorization, ...) rejects the write and the
 * next one goes; a transient failure (no answer, disconnected, rate limited) is
 * retried after a growing delay.
 */
export class Outbox {
  #items: Item[] = [];
  #running = false;
  #wake?: () => void;
  #closed = false;
  #exec: (op: Op) => Promise<unknown> | undefined;
  #delay: (attempt: number) => number;

  /** `exec` starts an attempt, or returns undefined when no transport can carry it now. */
  constructor(exec: (op: Op) => Promise<unknown> | undefined, delay: (attempt: number) => number) {
    this.#exec = exec;
    this.#delay = delay;
  }

  get size(): number {
    return this.#items.length;
  }

  push<T>(op: Op): Promise<T> {
    if (this.#closed) return Promise.reject(new CoursecastError("CLOSED", "the client is closed"));
    return new Promise<T>((resolve, reject) => {
      this.#items.push({ op, attempts: 0, resolve: resolve as (ack: unknown) => void, reject });
      this.kick();
    });
  }

  /** A transport may be usable now: try the queue. */
  kick(): void {
    if (this.#wake) this.#wake();
    else if (!this.#running) void this.#drain();
  }

  close(err: CoursecastError): void {
    this.#closed = true;
    for (const item of this.#items.splice(0)) item.reject(err);
    this.#wake?.();
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#items.length > 0 && !this.#closed) {
        const item = this.#items[0];
        const attempt = this.#exec(item.op);
        if (!attempt) return; // wait for the next kick
        try {
          const ack = await attempt;
          if (this.#items[0] === item) this.#items.shift();
          item.resolve(ack);
        } catch (e) {
          const err = toError(e);
          if (this.#items[0] !== item) continue; // closed meanwhile
          if (!err.transient) {
            this.#items.shift();
            item.reject(err);
            continue;
          }
          item.attempts += 1;
          await this.#sleep(this.#delay(item.attempts));
        }
      }
    } finally {
      this.#running = false;
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }
}
