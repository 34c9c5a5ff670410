/**
 * Errors carry the contract's `code` (PROTOCOL.md section 2) or one of the client's
 * own: `NETWORK` (no answer), `TIMEOUT` (no answer in time), `DISCONNECTED` (the
 * socket dropped before the ack), `CLOSED` (the client was closed),
 * `TOKEN_REFRESH_FAILED` (`getToken()` threw).
 */
export class CoursecastError extends Error {
  readonly code: string;
  /** HTTP status, when the error came from an HTTP answer. */
  readonly status?: number;

  constructor(code: string, message?: string, status?: number) {
    super(message ?? code);
    this.name = "CoursecastError";
    this.code = code;
    this.status = status;
  }

  /** Worth retrying later with the same request (same `clientMsgId`). */
  get transient(): boolean {
    return TRANSIENT.has(this.code);
  }
}

const TRANSIENT = new Set(["NETWORK", "TIMEOUT", "DISCONNECTED", "UNAVAILABLE", "RATE_LIMITED", "SERVER_FULL"]);

/** Codes after which the client must stop: the credentials will not work again. */
export const FATAL_AUTH_CODES = new Set(["TOKEN_INVALID", "TOKEN_MISSING", "FORBIDDEN"]);

/** Codes a server may refuse a socket handshake with (`connect_error` message). */
export const HANDSHAKE_CODES = new Set([
  "TOKEN_MISSING",
  "TOKEN_INVALID",
  "TOKEN_EXPIRED",
  "FORBIDDEN",
  "SERVER_FULL",
  "RATE_LIMITED",
]);

export function toError(err: unknown): CoursecastError {
  if (err instanceof CoursecastError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CoursecastError("NETWORK", message);
}

/** `{ok: true, ...}` as it is, or the `{ok: false, error}` answer as a thrown error. */
export function checkAck<T>(ack: unknown): T {
  const answer = ack as { ok?: boolean; error?: { code?: string; message?: string } } | null;
  if (answer && answer.ok === true) return ack as T;
  const code = answer?.error?.code ?? "INTERNAL";
  throw new CoursecastError(code, answer?.error?.message ?? "request refused");
}
