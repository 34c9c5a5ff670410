import { CoursecastError } from "./errors.js";
import type { Tokens } from "./tokens.js";

export interface HttpOptions {
  body?: unknown;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Send the token (default true). */
  auth?: boolean;
}

/**
 * JSON over `fetch` with the contract's error shape. A `TOKEN_EXPIRED` answer is
 * retried once with a refreshed token.
 */
export class Http {
  readonly baseUrl: string;
  #tokens: Tokens;
  #defaultTimeoutMs: number;

  constructor(baseUrl: string, tokens: Tokens, defaultTimeoutMs: number) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#tokens = tokens;
    this.#defaultTimeoutMs = defaultTimeoutMs;
  }

  async request<T>(method: string, path: string, options: HttpOptions = {}): Promise<T> {
    if (options.auth === false) return this.#once<T>(method, path, options, undefined);
    const token = await this.#tokens.get();
    try {
      return await this.#once<T>(method, path, options, token.value).then((answer) => {
        this.#tokens.proven(token.gen);
        return answer;
      });
    } catch (err) {
      if (!(err instanceof CoursecastError) || err.code !== "TOKEN_EXPIRED") throw err;
      const fresh = await this.#tokens.expired(token.gen);
      const answer = await this.#once<T>(method, path, options, fresh.value);
      this.#tokens.proven(fresh.gen);
      return answer;
    }
  }

  async #once<T>(method: string, path: string, options: HttpOptions, token: string | undefined): Promise<T> {
    const controller = new AbortController();
    const timeoutMs = options.timeoutMs ?? this.#defaultTimeoutMs;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const abort = () => controller.abort();
    options.signal?.addEventListener("abort", abort);
    const headers: Record<string, string> = { accept: "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    if (options.body !== undefined) headers["content-type"] = "application/json";
    try {
      let response: Response;
      try {
        response = await fetch(this.baseUrl + path, {
          method,
          headers,
          body: options.body === undefined ? undefined : JSON.stringify(options.body),
          signal: controller.signal,
        });
      } catch (err) {
        if (options.signal?.aborted) throw new CoursecastError("CLOSED", "request cancelled");
        if (timedOut) throw new CoursecastError("TIMEOUT", `${method} ${path}: no answer in ${timeoutMs} ms`);
        throw new CoursecastError("NETWORK", `${method} ${path}: ${(err as Error).message}`);
      }
      let answer: unknown;
      try {
        answer = await response.json();
      } catch {
        if (timedOut) throw new CoursecastError("TIMEOUT", `${method} ${path}: no answer in ${timeoutMs} ms`);
        if (options.signal?.aborted) throw new CoursecastError("CLOSED", "request cancelled");
        // A proxy's error page, or the connection cut mid-body.
        throw new CoursecastError(
          response.status >= 500 || response.ok ? "UNAVAILABLE" : "NETWORK",
          `${method} ${path}: answer ${response.status} is not JSON`,
          response.status,
        );
      }
      if (!response.ok) {
        const error = (answer as { error?: { code?: string; message?: string } })?.error;
        throw new CoursecastError(error?.code ?? "INTERNAL", error?.message ?? `HTTP ${response.status}`, response.status);
      }
      return answer as T;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", abort);
    }
  }
}
