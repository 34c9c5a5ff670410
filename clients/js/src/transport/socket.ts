import { Manager, type Socket } from "socket.io-client";
import { CoursecastError, HANDSHAKE_CODES, checkAck } from "../errors.js";
import { Emitter } from "../emitter.js";
import type { Tokens } from "../tokens.js";

export const NAMESPACES = ["chat", "notifications", "analytics", "collaboration"] as const;
export type Namespace = (typeof NAMESPACES)[number];

export interface SocketSettings {
  url: string;
  path: string;
  transports?: ("polling" | "websocket")[];
  reconnection: boolean;
  reconnectionDelay: number;
  reconnectionDelayMax: number;
  randomizationFactor: number;
  /** Engine.IO connection timeout per attempt (socket.io-client `timeout`). */
  timeout: number;
}

export type SocketEvents = {
  /** Every namespace is connected. */
  up: [];
  /** The transport was up and a namespace dropped. */
  down: [reason: string];
  /** One namespace (re)connected: replay its streams. */
  connected: [ns: Namespace];
  /** A connection attempt failed below the application (refused, unreachable, timed out). */
  failure: [err: Error];
  /** The server disconnected namespace `ns` (socket.io-client will not reconnect it by itself). */
  kicked: [ns: Namespace, tokenGen: number];
  /** The server refused the handshake with a contract code (`connect_error`). */
  refused: [ns: Namespace, code: string, tokenGen: number];
  /** socket.io-client starts reconnection attempt `attempt` (after its backoff delay). */
  reconnecting: [attempt: number];
  /** A server -> client event. */
  event: [ns: Namespace, name: string, payload: unknown];
};

/**
 * The four namespaces over one socket.io-client `Manager` (one Engine.IO connection).
 * Reconnection, backoff with jitter, transports and acks are socket.io-client's; this
 * class only wires them to the client: which token to send, when the whole is up or
 * down, and the server's refusals.
 */
export class SocketTransport extends Emitter<SocketEvents> {
  readonly manager: Manager;
  #sockets = new Map<Namespace, Socket>();
  #tokenGen = new Map<Namespace, number>();
  #up = false;
  #stopped = false;
  #timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(settings: SocketSettings, tokens: Tokens) {
    super();
    this.manager = new Manager(settings.url, {
      path: settings.path,
      transports: settings.transports,
      autoConnect: false,
      reconnection: settings.reconnection,
      reconnectionAttempts: Infinity,
      reconnectionDelay: settings.reconnectionDelay,
      reconnectionDelayMax: settings.reconnectionDelayMax,
      randomizationFactor: settings.randomizationFactor,
      timeout: settings.timeout,
    });
    this.manager.on("error", (err) => {
      if (!this.#stopped && !this.#up) this.emit("failure", err);
    });
    this.manager.on("reconnect_attempt", (attempt) => {
      if (!this.#stopped) this.emit("reconnecting", attempt);
    });
    for (const ns of NAMESPACES) {
      const socket = this.manager.socket(`/${ns}`, {
        auth: (cb) => {
          const token = tokens.current;
          this.#tokenGen.set(ns, token?.gen ?? 0);
          cb({ token: token?.value });
        },
      });
      socket.on("connect", () => {
        if (this.#stopped) return;
        this.emit("connected", ns);
        if (!this.#up && this.isConnected()) {
          this.#up = true;
          this.emit("up");
        }
      });
      socket.on("disconnect", (reason) => {
        if (this.#stopped) return;
        if (this.#up) {
          this.#up = false;
          this.emit("down", reason);
        }
        // socket.io-client reconnects by itself except after a server-side disconnect
        // (token expiry, logout, flood): the client decides (reconnectLater).
        if (reason === "io server disconnect") this.emit("kicked", ns, this.tokenGen(ns));
      });
      socket.on("connect_error", (err) => {
        if (this.#stopped) return;
        if (HANDSHAKE_CODES.has(err.message)) this.emit("refused", ns, err.message, this.#tokenGen.get(ns) ?? 0);
      });
      socket.onAny((name: string, payload: unknown) => {
        if (!this.#stopped) this.emit("event", ns, name, payload);
      });
      this.#sockets.set(ns, socket);
    }
  }

  start(): void {
    for (const socket of this.#sockets.values()) socket.connect();
  }

  /** Closes every namespace and the connection; no event is emitted afterwards. */
  stop(): void {
    this.#stopped = true;
    this.#up = false;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.manager.reconnection(false);
    for (const socket of this.#sockets.values()) {
      socket.offAny();
      socket.disconnect();
    }
    this.manager.engine?.close();
  }

  /** All namespaces (or `ns`) connected. */
  isConnected(ns?: Namespace): boolean {
    if (ns) return this.#sockets.get(ns)?.connected ?? false;
    return [...this.#sockets.values()].every((socket) => socket.connected);
  }

  get up(): boolean {
    return this.#up;
  }

  /** The token generation namespace `ns` authenticated with. */
  tokenGen(ns: Namespace): number {
    return this.#tokenGen.get(ns) ?? 0;
  }

  setTokenGen(ns: Namespace, gen: number): void {
    this.#tokenGen.set(ns, gen);
  }

  /** Lets socket.io-client reconnect by itself again (after a trial connection). */
  setReconnection(on: boolean): void {
    this.manager.reconnection(on);
  }

  /** Connects `ns` again after `delayMs` (a refused or server-closed namespace stays down otherwise). */
  reconnectLater(ns: Namespace, delayMs: number): void {
    if (this.#stopped) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      const socket = this.#sockets.get(ns);
      if (!this.#stopped && socket && !socket.connected && !socket.active) socket.connect();
    }, delayMs);
    this.#timers.add(timer);
  }

  /** Emits `event` and resolves with its `{ok: true}` ack; rejects with the ack's code or a transport error. */
  async request<T>(ns: Namespace, event: string, payload: unknown, timeoutMs: number): Promise<T> {
    const socket = this.#sockets.get(ns);
    // Never let socket.io-client buffer a write while disconnected: the outbox retries
    // it itself, and a buffered copy would be a second attempt we do not control.
    if (!socket?.connected || this.#stopped) throw new CoursecastError("DISCONNECTED", `/${ns} is not connected`);
    let ack: unknown;
    try {
      ack = await socket.timeout(timeoutMs).emitWithAck(event, payload);
    } catch (err) {
      const disconnected = /disconnect/i.test((err as Error).message);
      throw new CoursecastError(
        disconnected ? "DISCONNECTED" : "TIMEOUT",
        disconnected ? `/${ns} ${event}: disconnected before the ack` : `/${ns} ${event}: no ack in ${timeoutMs} ms`,
      );
    }
    return checkAck<T>(ack);
  }
}
