import { CoursecastError } from "./errors.js";

/** Returns the current token; called at start, on `TOKEN_EXPIRED` and on `session:expiring`. */
export type GetToken = () => string | Promise<string>;

export interface Token {
  value: string;
  /** Increases with every token obtained; tells stale refusals from fresh ones. */
  gen: number;
}

/**
 * The one place tokens come from. Refreshes are single-flight, and an expired token
 * is refreshed once: if the refreshed token is refused as expired before anything
 * accepted it, the refresh did not help and the client stops.
 */
export class Tokens {
  #getToken: GetToken;
  #current?: Token & { fromRefresh: boolean; proven: boolean };
  #inflight?: Promise<Token>;

  constructor(getToken: GetToken) {
    this.#getToken = getToken;
  }

  get current(): Token | undefined {
    return this.#current;
  }

  /** The current token, fetching the first one if there is none yet. */
  async get(): Promise<Token> {
    return this.#current ?? this.#inflight ?? this.#fetch("initial");
  }

  /** Something accepted the token of generation `gen`. */
  proven(gen: number): void {
    if (this.#current?.gen === gen) this.#current.proven = true;
  }

  /** The token to retry with after a `TOKEN_EXPIRED` refusal of generation `gen`. */
  async expired(gen: number): Promise<Token> {
    const current = this.#current;
    if (current && gen < current.gen) return current;
    if (this.#inflight) return this.#inflight;
    if (current?.fromRefresh && !current.proven) {
      throw new CoursecastError("TOKEN_EXPIRED", "the refreshed token was refused as expired too");
    }
    return this.#fetch("expired");
  }

  /** A fresh token before generation `gen` expires (`session:expiring`). */
  async renew(gen: number): Promise<Token> {
    const current = this.#current;
    if (current && gen < current.gen) return current;
    return this.#inflight ?? this.#fetch("renew");
  }

  /** The user id (`sub`) of the current token, read without checking it. */
  userId(): string | undefined {
    const sub = this.#claims()?.sub;
    return typeof sub === "string" ? sub : undefined;
  }

  /** Whether the current token's `exp` has passed by this machine's clock. */
  isExpired(): boolean {
    const exp = this.#claims()?.exp;
    return typeof exp === "number" && exp * 1000 <= Date.now();
  }

  #claims(): Record<string, unknown> | undefined {
    const payload = this.#current?.value.split(".")[1];
    if (!payload) return undefined;
    try {
      return JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }

  #fetch(reason: "initial" | "renew" | "expired"): Promise<Token> {
    const gen = (this.#current?.gen ?? 0) + 1;
    this.#inflight = (async () => {
      let value: string;
      try {
        value = await this.#getToken();
      } catch (err) {
        throw new CoursecastError("TOKEN_REFRESH_FAILED", `getToken() failed: ${(err as Error)?.message ?? err}`);
      }
      if (typeof value !== "string" || value === "") {
        throw new CoursecastError("TOKEN_MISSING", "getToken() returned no token");
      }
      const current = this.#current;
      if (current && value === current.value) {
        // The same token again: nothing new. After an expiry it counts as the one
        // refresh (a second refusal stops the client).
        if (reason === "expired") {
          current.fromRefresh = true;
          current.proven = false;
        }
        return current;
      }
      this.#current = { value, gen, fromRefresh: reason !== "initial", proven: false };
      return this.#current;
    })().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }
}
