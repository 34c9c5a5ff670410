import { AnalyticsApi, ChatApi, CollaborationApi, NotificationsApi } from "./api.js";
import { CoursecastError, FATAL_AUTH_CODES, toError } from "./errors.js";
import { Emitter } from "./emitter.js";
import { Http } from "./http.js";
import { Outbox, type Op } from "./queue.js";
import { Streams, parseKey, streamKey, type Sequenced } from "./streams/cursors.js";
import { type GetToken, Tokens } from "./tokens.js";
import { PollingTransport } from "./transport/polling.js";
import { type SseEventName, SseTransport } from "./transport/sse.js";
import { NAMESPACES, type Namespace, SocketTransport } from "./transport/socket.js";
import type {
  AnnotationEvent,
  CursorEvent,
  JoinResult,
  MessageEvent,
  Mode,
  NotificationEvent,
  OnlinePage,
  Page,
  PresenceEvent,
  ProgressEvent,
  Status,
  TypingEvent,
} from "./types.js";

export interface FallbackOptions {
  /**
   * Leave sockets (for SSE, or polling) after this many failed connection attempts in a
   * row (default 3); leave SSE for polling after as many failed SSE attempts.
   */
  afterFailures: number;
  /** ...or after this many drops of a connected socket (or SSE stream) (default 3)... */
  maxDrops: number;
  /** ...within this window (default 60 s). */
  dropWindowMs: number;
  /** While on SSE or polling, check this often whether sockets work again (default 10 s). */
  probeIntervalMs: number;
  /** Long-poll `wait`, seconds (default 25). */
  pollWaitSeconds: number;
  /** Try server-sent events before long polling (default true). */
  sse: boolean;
  /** An SSE attempt without its `ready` event after this long has failed (default 10 s). */
  sseReadyTimeoutMs: number;
  /** An SSE stream silent this long (the server's heartbeat is every 15 s) is reopened (default 45 s). */
  sseIdleTimeoutMs: number;
}

export interface ClientOptions {
  /** The server's origin, e.g. `http://127.0.0.1:3000`; default: the page's origin. */
  url?: string;
  /** Returns the token (sync or async); called at start and whenever a fresh one is needed. */
  getToken: GetToken;
  /** The user's id; default: the token's `sub`. */
  userId?: string;
  /** Socket.IO path (default `/socket.io/`). */
  path?: string;
  /** Engine.IO transports (default socket.io-client's: polling, then upgrade to websocket). */
  transports?: ("polling" | "websocket")[];
  /** socket.io-client reconnection: first delay (default 1000 ms)... */
  reconnectionDelay?: number;
  /** ...doubling up to this (default 10000 ms)... */
  reconnectionDelayMax?: number;
  /** ...each randomised by +-this factor (default 0.5). */
  randomizationFactor?: number;
  /** One socket connection attempt may take this long (default 10000 ms). */
  connectTimeoutMs?: number;
  /** A socket ack may take this long before the write is retried (default 10000 ms). */
  ackTimeoutMs?: number;
  /** An HTTP request (other than a long poll) may take this long (default 15000 ms). */
  httpTimeoutMs?: number;
  /** HTTP polling fallback settings, or `false` for sockets only. */
  fallback?: Partial<FallbackOptions> | false;
  /** Cursors from an earlier `client.cursors()`, to resume where that client stopped. */
  cursors?: Record<string, number>;
}

export type ClientEvents = {
  status: [status: Status, previous: Status];
  /** `fatal`: the client stopped (bad token, refused); otherwise a report (a refused join, a server `error` event). */
  error: [err: CoursecastError, fatal: boolean];
  /** socket.io-client starts reconnection attempt `attempt`. */
  reconnecting: [attempt: number];
};

export type CourseNs = "chat" | "collaboration";

interface Subscription {
  waiters: { resolve: (result: JoinResult) => void; reject: (err: CoursecastError) => void }[];
}

const DEFAULT_FALLBACK: FallbackOptions = {
  afterFailures: 3,
  maxDrops: 3,
  dropWindowMs: 60_000,
  probeIntervalMs: 10_000,
  pollWaitSeconds: 25,
  sse: true,
  sseReadyTimeoutMs: 10_000,
  sseIdleTimeoutMs: 45_000,
};

/**
 * The client facade: one API for the four namespaces, whichever transport carries
 * them. Sockets first (socket.io-client, reconnecting with backoff); server-sent
 * events when they cannot connect or keep dropping; HTTP long polling when SSE does
 * not work either; back to sockets when a probe connects again. Streams resume from
 * their cursors on every switch or reconnect.
 */
export class CoursecastClient extends Emitter<ClientEvents> {
  readonly chat: ChatApi;
  readonly notifications: NotificationsApi;
  readonly analytics: AnalyticsApi;
  readonly collaboration: CollaborationApi;

  #opts: Required<Omit<ClientOptions, "fallback" | "userId" | "cursors" | "transports" | "url">> & {
    url: string;
    transports?: ("polling" | "websocket")[];
  };
  #fallback: FallbackOptions | false;
  #tokens: Tokens;
  #http: Http;
  #streams: Streams;
  #outbox: Outbox;
  #initialCursors: Record<string, number>;
  #userIdOption?: string;
  #me = "";

  #status: Status = "offline";
  #mode: Mode = "socket";
  #started = false;
  #closed = false;
  #socket?: SocketTransport;
  #trial?: SocketTransport;
  #trialTimer?: ReturnType<typeof setTimeout>;
  #polling?: PollingTransport;
  #sse?: SseTransport;
  /** `watch()` calls made while on SSE, answered by the next `ready` (or a refusal). */
  #watchWaiters = new Map<string, { resolve: (ok: { ok: true }) => void; reject: (err: CoursecastError) => void }[]>();
  #probeTimer?: ReturnType<typeof setInterval>;
  /** Failed connection attempts in a row of the current transport (sockets, then SSE). */
  #failures = 0;
  #drops: number[] = [];
  #syncing = new Set<string>();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #courses: Record<CourseNs, Map<string, Subscription>> = { chat: new Map(), collaboration: new Map() };
  #watched = new Set<string>();

  constructor(options: ClientOptions) {
    super();
    const url = options.url ?? (typeof location !== "undefined" ? location.origin : undefined);
    if (!url) throw new CoursecastError("VALIDATION_FAILED", "options.url is required outside a browser");
    if (typeof options.getToken !== "function") {
      throw new CoursecastError("VALIDATION_FAILED", "options.getToken must be a function");
    }
    this.#opts = {
      url: url.replace(/\/+$/, ""),
      getToken: options.getToken,
      path: options.path ?? "/socket.io/",
      transports: options.transports,
      reconnectionDelay: options.reconnectionDelay ?? 1000,
      reconnectionDelayMax: options.reconnectionDelayMax ?? 10_000,
      randomizationFactor: options.randomizationFactor ?? 0.5,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
      httpTimeoutMs: options.httpTimeoutMs ?? 15_000,
    };
    this.#fallback = options.fallback === false ? false : { ...DEFAULT_FALLBACK, ...options.fallback };
    this.#initialCursors = { ...options.cursors };
    this.#userIdOption = options.userId;
    this.#tokens = new Tokens(options.getToken);
    this.#http = new Http(this.#opts.url, this.#tokens, this.#opts.httpTimeoutMs);
    this.#streams = new Streams(
      (key, event) => this.#deliver(key, event),
      (key) => this.#onGap(key),
    );
    this.#outbox = new Outbox(
      (op) => this.#exec(op),
      (attempt) => this.#delay(attempt),
    );
    this.chat = new ChatApi(this);
    this.notifications = new NotificationsApi(this);
    this.analytics = new AnalyticsApi(this);
    this.collaboration = new CollaborationApi(this);
  }

  get status(): Status {
    return this.#status;
  }

  /** Which transport carries the streams now. */
  get mode(): Mode {
    return this.#mode;
  }

  get userId(): string {
    return this.#me;
  }

  /** Writes waiting for an answer (queued while offline, or in flight). */
  get pendingWrites(): number {
    return this.#outbox.size;
  }

  /** The highest `seq` delivered per stream; pass as `cursors` to a later client to resume. */
  cursors(): Record<string, number> {
    return this.#streams.snapshot();
  }

  /** Starts connecting; resolves once the first token is there (not once connected). */
  async connect(): Promise<void> {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#setStatus("connecting");
    try {
      await this.#tokens.get();
    } catch (err) {
      this.#fatal(toError(err));
      return;
    }
    this.#me = this.#userIdOption ?? this.#tokens.userId() ?? "";
    if (!this.#me) {
      this.#fatal(new CoursecastError("TOKEN_INVALID", "the token names no user (sub)"));
      return;
    }
    for (const [key, cursor] of Object.entries(this.#initialCursors)) this.#streams.track(key, cursor);
    for (const kind of ["notifications", "progress"] as const) {
      const key = streamKey(kind, this.#me);
      this.#streams.track(key, this.#streams.cursor(key) ?? 0);
    }
    this.#socket = this.#startSocket(false);
  }

  /** Stops everything; queued writes are rejected with `CLOSED`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#teardown(new CoursecastError("CLOSED", "the client was closed"));
  }

  // ---- transports ------------------------------------------------------------------

  #startSocket(trial: boolean): SocketTransport {
    const o = this.#opts;
    const t = new SocketTransport(
      {
        url: o.url,
        path: o.path,
        transports: o.transports,
        reconnection: !trial,
        reconnectionDelay: o.reconnectionDelay,
        reconnectionDelayMax: o.reconnectionDelayMax,
        randomizationFactor: o.randomizationFactor,
        timeout: o.connectTimeoutMs,
      },
      this.#tokens,
    );
    t.on("connected", (ns) => {
      this.#tokens.proven(t.tokenGen(ns));
      if (t === this.#socket) this.#resume(ns);
    });
    t.on("up", () => this.#onUp(t));
    t.on("down", () => this.#onDown(t));
    t.on("failure", () => this.#onFailure(t));
    t.on("refused", (ns, code, gen) => this.#onRefused(t, ns, code, gen));
    t.on("kicked", (ns, gen) => this.#onKicked(t, ns, gen));
    t.on("reconnecting", (attempt) => {
      if (t === this.#socket) this.emit("reconnecting", attempt);
    });
    t.on("event", (ns, name, payload) => {
      if (t === this.#socket) this.#onEvent(t, ns, name, payload);
    });
    t.start();
    return t;
  }

  #onUp(t: SocketTransport): void {
    if (t === this.#trial) {
      // A probe connected: sockets work again. Polling stops; every stream resumes
      // from its cursor over the socket.
      this.#endTrial(false);
      this.#stopFallback();
      this.#answerWatches(); // renewed over the socket by #resume("analytics")
      this.#socket = t;
      this.#mode = "socket";
      t.setReconnection(true);
      for (const ns of NAMESPACES) this.#resume(ns);
    }
    if (t !== this.#socket) return;
    this.#failures = 0;
    this.#setStatus("online");
    this.#outbox.kick();
  }

  #onDown(t: SocketTransport): void {
    if (t !== this.#socket) return;
    const now = Date.now();
    this.#drops.push(now);
    if (this.#fallback) {
      const window = this.#fallback.dropWindowMs;
      this.#drops = this.#drops.filter((at) => now - at <= window);
      if (this.#drops.length >= this.#fallback.maxDrops) {
        this.#startFallback();
        return;
      }
    }
    this.#setStatus("connecting");
  }

  #onFailure(t: SocketTransport): void {
    if (t === this.#trial) {
      this.#endTrial(true);
      return;
    }
    if (t !== this.#socket) return;
    this.#failures += 1;
    if (this.#fallback && this.#failures >= this.#fallback.afterFailures) this.#startFallback();
    else if (!this.#fallback && this.#failures >= DEFAULT_FALLBACK.afterFailures) this.#setStatus("offline");
  }

  #onRefused(t: SocketTransport, ns: Namespace, code: string, gen: number): void {
    if (t !== this.#socket && t !== this.#trial) return;
    if (code === "TOKEN_EXPIRED") {
      this.#tokens.expired(gen).then(
        () => t.reconnectLater(ns, 0),
        (err) => this.#fatal(toError(err)),
      );
      return;
    }
    if (FATAL_AUTH_CODES.has(code)) {
      this.#fatal(new CoursecastError(code, `the server refused the /${ns} connection: ${code}`));
      return;
    }
    // SERVER_FULL, RATE_LIMITED: back off, like a failed attempt.
    if (t === this.#trial) {
      this.#endTrial(true);
      return;
    }
    this.#onFailure(t);
    if (t === this.#socket) t.reconnectLater(ns, this.#delay(this.#failures));
  }

  /**
   * The server closed a namespace: at the token's `exp` (then refresh first, once; a
   * token that is still expired stops the client), at logout (the handshake will say
   * TOKEN_INVALID), or after a flood.
   */
  #onKicked(t: SocketTransport, ns: Namespace, gen: number): void {
    if (t !== this.#socket) return;
    if (!this.#tokens.isExpired()) {
      t.reconnectLater(ns, this.#opts.reconnectionDelay);
      return;
    }
    this.#tokens.expired(gen).then(
      () => {
        if (this.#tokens.isExpired()) throw new CoursecastError("TOKEN_EXPIRED", "getToken() returned an expired token");
        t.reconnectLater(ns, 0);
      },
    ).catch((err) => this.#fatal(toError(err)));
  }

  /** Sockets do not work: SSE (or polling), and a probe every `probeIntervalMs` to come back. */
  #startFallback(): void {
    if (this.#mode !== "socket" || this.#closed) return;
    this.#socket?.stop();
    this.#socket = undefined;
    if (this.#status === "online") this.#setStatus("connecting");
    const fallback = this.#fallback as FallbackOptions;
    if (fallback.sse) this.#startSse();
    else this.#startPolling();
    this.#probeTimer = setInterval(() => void this.#probe(), fallback.probeIntervalMs);
  }

  /**
   * SSE carries the streams from its first `ready` on. A `trial` (while polling) runs
   * beside the polls and takes over at that `ready`; if it fails first, it is stopped
   * and polling goes on.
   */
  #startSse(trial = false): void {
    const fallback = this.#fallback as FallbackOptions;
    if (!trial) this.#enterSse();
    const sse = new SseTransport(
      {
        url: this.#opts.url,
        readyTimeoutMs: fallback.sseReadyTimeoutMs,
        idleTimeoutMs: fallback.sseIdleTimeoutMs,
        delay: (n) => this.#delay(n),
        specs: () => this.#sseSpecs(),
      },
      this.#tokens,
    );
    this.#sse = sse;
    sse.on("ready", (streams) => {
      if (sse !== this.#sse) return;
      if (this.#mode === "polling") {
        this.#polling?.stop();
        this.#polling = undefined;
        this.#enterSse();
      }
      this.#onSseReady(streams);
    });
    sse.on("event", (name, payload) => {
      if (sse === this.#sse) this.#onStored(name, payload as Record<string, unknown> & Sequenced, true);
    });
    sse.on("expiring", (gen) => {
      if (sse === this.#sse) this.#renewSse(sse, gen);
    });
    sse.on("failure", (err, gen) => {
      if (sse !== this.#sse) return;
      if (this.#mode === "polling") this.#stopSse(); // a failed trial: polling goes on
      else this.#onSseTrouble(sse, err, gen, false);
    });
    sse.on("down", (err, gen) => {
      if (sse === this.#sse) this.#onSseTrouble(sse, err, gen, true);
    });
    sse.start();
  }

  #enterSse(): void {
    this.#mode = "sse";
    this.#failures = 0;
    this.#drops = [];
  }

  /** While polling, once a probe found sockets still refused: does SSE work again? */
  #trySse(): void {
    if (this.#mode !== "polling" || this.#sse || this.#closed || !this.#fallback || !this.#fallback.sse) return;
    this.#startSse(true);
  }

  #stopSse(): void {
    this.#sse?.stop();
    this.#sse = undefined;
  }

  /** What the SSE connection carries: every stream the client follows, each from its cursor. */
  #sseSpecs(): string[] {
    const keys = [streamKey("notifications", this.#me), streamKey("progress", this.#me)];
    for (const ns of ["chat", "collaboration"] as const) {
      for (const courseId of this.#courses[ns].keys()) keys.push(courseKey(ns, courseId));
    }
    const specs = keys.map((key) => {
      const cursor = this.#streams.cursor(key);
      return cursor === undefined ? key : `${key}:${cursor}`;
    });
    for (const courseId of this.#watched) specs.push(`watch:${courseId}`);
    return specs;
  }

  #onSseReady(streams: { stream: string; cursor: number }[]): void {
    const started = new Map(streams.map(({ stream, cursor }) => [stream, cursor]));
    for (const [key, cursor] of started) {
      // A stream joined without `since` starts at the head the server reports.
      if (!key.startsWith("watch:") && this.#streams.cursor(key) === undefined) this.#streams.track(key, cursor);
    }
    this.#failures = 0;
    this.#setStatus("sse");
    this.#outbox.kick();
    for (const ns of ["chat", "collaboration"] as const) {
      for (const courseId of this.#courses[ns].keys()) {
        const key = courseKey(ns, courseId);
        const cursor = this.#streams.cursor(key) ?? started.get(key);
        if (cursor !== undefined) this.#settle(ns, courseId, { ok: true, courseId, cursor, online: [], onlineCount: 0 });
      }
    }
    for (const [courseId, waiters] of this.#watchWaiters) {
      if (!this.#watched.has(courseId)) continue;
      this.#watchWaiters.delete(courseId);
      for (const w of waiters) w.resolve({ ok: true });
    }
  }

  /**
   * An SSE attempt failed (`up` false) or an open stream ended (`up` true). Token
   * codes are handled as on sockets; a refused stream is found and dropped; a
   * server without SSE (404), with SSE off or full (503), or one that refuses our
   * request (400, e.g. more streams than it takes) sends the client to polling at
   * once; anything else counts as a failure or a drop, `afterFailures` failures in a
   * row or `maxDrops` drops within `dropWindowMs` send it to polling too.
   */
  #onSseTrouble(sse: SseTransport, err: CoursecastError, gen: number, up: boolean): void {
    const fallback = this.#fallback as FallbackOptions;
    if (err.code === "TOKEN_EXPIRED") {
      this.#tokens.expired(gen).then(
        () => sse.reconnect(),
        (e) => this.#fatal(toError(e)),
      );
      return;
    }
    if (err.code === "TOKEN_INVALID" || err.code === "TOKEN_MISSING") {
      this.#fatal(err);
      return;
    }
    if (err.code === "FORBIDDEN" || err.code === "NOT_FOUND") {
      void this.#sseRefused(sse, err);
      return;
    }
    if (err.status === 503) {
      this.#startPolling(); // SSE switched off, the node full, or a proxy without it: expected
      return;
    }
    if (!err.transient) {
      this.#report(err); // VALIDATION_FAILED (e.g. more streams than the server takes), INTERNAL
      this.#startPolling();
      return;
    }
    if (up) {
      const now = Date.now();
      this.#drops = [...this.#drops.filter((at) => now - at <= fallback.dropWindowMs), now];
      if (this.#drops.length >= fallback.maxDrops) this.#startPolling();
      else this.#setStatus("connecting");
      return;
    }
    this.#failures += 1;
    if (this.#failures >= fallback.afterFailures) this.#startPolling();
  }

  /**
   * SSE refused with FORBIDDEN or NOT_FOUND, without saying which stream: ask each
   * course stream over HTTP and drop the refused ones; else drop the watches not yet
   * confirmed by a `ready`. If none is to blame, the server has no SSE endpoint (an
   * older one): poll.
   */
  async #sseRefused(sse: SseTransport, err: CoursecastError): Promise<void> {
    let blamed = false;
    for (const ns of ["chat", "collaboration"] as const) {
      for (const courseId of [...this.#courses[ns].keys()]) {
        const key = courseKey(ns, courseId);
        try {
          await this.#http.request("GET", `${streamPath(key)}?since=${this.#streams.cursor(key) ?? 0}&limit=1&wait=0`);
        } catch (e) {
          const refused = toError(e);
          if (refused.transient) continue;
          blamed = true;
          this.#streamRefused(key, refused);
        }
      }
    }
    if (sse !== this.#sse) return;
    if (!blamed && this.#watchWaiters.size > 0) {
      blamed = true;
      for (const [courseId, waiters] of this.#watchWaiters) {
        this.#watched.delete(courseId);
        for (const w of waiters) w.reject(err);
      }
      this.#watchWaiters.clear();
    }
    if (blamed) sse.reconnect();
    else this.#startPolling();
  }

  /** `session:expiring` on SSE: fetch a fresh token and reopen with it (resuming by the last id). */
  #renewSse(sse: SseTransport, gen: number): void {
    this.#tokens.renew(gen).then(
      (token) => {
        if (token.gen !== gen && sse === this.#sse) sse.reopen();
      },
      (e) => {
        const err = toError(e);
        if (!err.transient) this.#report(err);
      },
    );
  }

  /** SSE does not work (or is switched off): long polling of every stream. */
  #startPolling(): void {
    if (this.#mode === "polling" || this.#closed) return;
    this.#stopSse();
    this.#mode = "polling";
    if (this.#status === "sse") this.#setStatus("connecting");
    this.#answerWatches(); // polling has no watch endpoint: kept for the return to sockets
    const fallback = this.#fallback as FallbackOptions;
    const polling = new PollingTransport(this.#http, this.#streams, fallback.pollWaitSeconds, (n) => this.#delay(n));
    this.#polling = polling;
    polling.on("healthy", () => {
      if (polling !== this.#polling) return;
      this.#setStatus("polling");
      this.#outbox.kick();
    });
    polling.on("failing", () => {
      if (polling === this.#polling) this.#setStatus("offline");
    });
    polling.on("refused", (key, err) => {
      if (polling === this.#polling) this.#streamRefused(key, err);
    });
    for (const kind of ["notifications", "progress"] as const) this.#pollStream(streamKey(kind, this.#me));
    for (const ns of ["chat", "collaboration"] as const) {
      for (const courseId of this.#courses[ns].keys()) this.#pollCourse(ns, courseId);
    }
  }

  /** Watches made on SSE and not yet confirmed, answered when the client leaves SSE. */
  #answerWatches(): void {
    for (const waiters of this.#watchWaiters.values()) for (const w of waiters) w.resolve({ ok: true });
    this.#watchWaiters.clear();
  }

  #stopFallback(): void {
    this.#stopSse();
    this.#polling?.stop();
    this.#polling = undefined;
    if (this.#probeTimer) clearInterval(this.#probeTimer);
    this.#probeTimer = undefined;
  }

  #pollStream(key: string): Promise<number> | undefined {
    return this.#polling?.watch(key, streamPath(key));
  }

  #pollCourse(ns: CourseNs, courseId: string): void {
    this.#pollStream(courseKey(ns, courseId))?.then(
      (cursor) => this.#settle(ns, courseId, { ok: true, courseId, cursor, online: [], onlineCount: 0 }),
      () => {}, // reported through the transport's "refused"
    );
  }

  /** While on SSE or polling: is the server up and do sockets connect again? */
  async #probe(): Promise<void> {
    if (!this.#mayProbe()) return;
    try {
      const ping = await this.#http.request<{ websocket?: { available?: boolean } }>("POST", "/api/realtime/ping", {
        auth: false,
        timeoutMs: 5000,
      });
      if (ping.websocket?.available === false) {
        this.#trySse();
        return;
      }
    } catch {
      return;
    }
    if (!this.#mayProbe()) return; // a switch or close while the ping was out
    this.#trial = this.#startSocket(true);
    this.#trialTimer = setTimeout(() => this.#endTrial(true), this.#opts.connectTimeoutMs + 2000);
  }

  #mayProbe(): boolean {
    return this.#mode !== "socket" && !this.#trial && !this.#closed;
  }

  /** The trial socket connected (`stop` false), or failed: then, while polling, try SSE. */
  #endTrial(stop: boolean): void {
    if (this.#trialTimer) clearTimeout(this.#trialTimer);
    this.#trialTimer = undefined;
    const failed = stop && this.#trial !== undefined;
    if (stop) this.#trial?.stop();
    this.#trial = undefined;
    if (failed) this.#trySse();
  }

  #fatal(err: CoursecastError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#teardown(err);
    this.emit("error", err, true);
  }

  #teardown(err: CoursecastError): void {
    this.#endTrial(true);
    this.#socket?.stop();
    this.#socket = undefined;
    this.#stopFallback();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#outbox.close(err);
    for (const ns of ["chat", "collaboration"] as const) {
      for (const sub of this.#courses[ns].values()) for (const w of sub.waiters.splice(0)) w.reject(err);
    }
    for (const waiters of this.#watchWaiters.values()) for (const w of waiters) w.reject(err);
    this.#watchWaiters.clear();
    this.#setStatus("offline");
  }

  #setStatus(status: Status): void {
    if (status === this.#status) return;
    const previous = this.#status;
    this.#status = status;
    this.emit("status", status, previous);
  }

  /** Backoff for retries of our own (writes, polls, SSE): like socket.io-client's. */
  #delay(attempt: number): number {
    const o = this.#opts;
    const base = Math.min(o.reconnectionDelay * 2 ** Math.min(attempt - 1, 30), o.reconnectionDelayMax);
    const jitter = base * o.randomizationFactor * (Math.random() * 2 - 1);
    return Math.max(0, Math.min(base + jitter, o.reconnectionDelayMax));
  }

  #later(fn: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
  }

  // ---- streams -------------------------------------------------------------------

  /** A namespace (re)connected: replay what it missed from each stream's cursor. */
  #resume(ns: Namespace): void {
    const t = this.#socket;
    if (!t) return;
    switch (ns) {
      case "chat":
      case "collaboration":
        for (const courseId of this.#courses[ns].keys()) void this.#resumeCourse(ns, courseId);
        break;
      case "notifications":
        void this.#resumeUser("notifications");
        break;
      case "analytics":
        void this.#resumeUser("analytics");
        for (const courseId of this.#watched) {
          t.request("analytics", "watch", { courseId }, this.#opts.ackTimeoutMs).catch((err) =>
            this.#report(toError(err)),
          );
        }
        break;
    }
  }

  async #resumeCourse(ns: CourseNs, courseId: string): Promise<void> {
    const t = this.#socket;
    const key = courseKey(ns, courseId);
    if (!t?.isConnected(ns) || this.#syncing.has(key)) return;
    this.#syncing.add(key);
    this.#streams.beginSync(key);
    try {
      let ack: { cursor: number; missed: Sequenced[]; hasMore: boolean; online: string[]; onlineCount: number };
      do {
        const since = this.#streams.cursor(key);
        ack = await t.request(ns, "join", since === undefined ? { courseId } : { courseId, since }, this.#opts.ackTimeoutMs);
        if (this.#streams.cursor(key) === undefined) this.#streams.track(key, ack.cursor);
        this.#streams.page(key, ack.missed, !ack.hasMore);
      } while (ack.hasMore);
      this.#syncing.delete(key);
      const online = ack.online ?? [];
      const count = ack.onlineCount ?? online.length;
      if (ns === "chat") this.chat.emit("roster", { courseId, online, count });
      else this.collaboration.emit("roster", { courseId, online, count });
      const cursor = this.#streams.cursor(key) ?? ack.cursor;
      this.#settle(ns, courseId, { ok: true, courseId, cursor, online, onlineCount: count });
    } catch (e) {
      this.#syncing.delete(key);
      this.#streams.syncFailed(key);
      const err = toError(e);
      if (!err.transient) this.#streamRefused(key, err);
      else if (t === this.#socket) this.#later(() => void this.#resumeCourse(ns, courseId), this.#delay(1));
    }
  }

  async #resumeUser(ns: "notifications" | "analytics"): Promise<void> {
    const t = this.#socket;
    const key = streamKey(ns === "notifications" ? "notifications" : "progress", this.#me);
    if (!t?.isConnected(ns) || this.#syncing.has(key)) return;
    this.#syncing.add(key);
    this.#streams.beginSync(key);
    try {
      let page: Page<Sequenced>;
      do {
        page = await t.request(ns, "sync", { since: this.#streams.cursor(key) ?? 0 }, this.#opts.ackTimeoutMs);
        this.#streams.page(key, page.events, !page.hasMore);
      } while (page.hasMore);
      this.#syncing.delete(key);
    } catch (e) {
      this.#syncing.delete(key);
      this.#streams.syncFailed(key);
      const err = toError(e);
      if (!err.transient) this.#report(err);
      else if (t === this.#socket) this.#later(() => void this.#resumeUser(ns), this.#delay(1));
    }
  }

  /** A live event skipped ahead of its stream's cursor: read the hole (polling and SSE read in order anyway). */
  #onGap(key: string): void {
    if (this.#mode !== "socket") return;
    const { kind, id } = parseKey(key);
    if (kind === "messages" && this.#courses.chat.has(id)) void this.#resumeCourse("chat", id);
    else if (kind === "annotations" && this.#courses.collaboration.has(id)) void this.#resumeCourse("collaboration", id);
    else if (kind === "notifications") void this.#resumeUser("notifications");
    else if (kind === "progress") void this.#resumeUser("analytics");
  }

  /** A stream was refused (not a member, no such course, bad token). */
  #streamRefused(key: string, err: CoursecastError): void {
    if (err.code.startsWith("TOKEN_") || (err.code === "FORBIDDEN" && !key.startsWith("messages:") && !key.startsWith("annotations:"))) {
      this.#fatal(err);
      return;
    }
    const { kind, id } = parseKey(key);
    const ns: CourseNs | undefined = kind === "messages" ? "chat" : kind === "annotations" ? "collaboration" : undefined;
    if (ns) {
      const sub = this.#courses[ns].get(id);
      this.#courses[ns].delete(id);
      this.#polling?.unwatch(key);
      this.#sse?.reopen();
      for (const w of sub?.waiters.splice(0) ?? []) w.reject(err);
    }
    this.#report(err);
  }

  #settle(ns: CourseNs, courseId: string, result: JoinResult): void {
    for (const w of this.#courses[ns].get(courseId)?.waiters.splice(0) ?? []) w.resolve(result);
  }

  #report(err: CoursecastError): void {
    this.emit("error", err, false);
  }

  #deliver(key: string, event: Sequenced): void {
    switch (parseKey(key).kind) {
      case "messages":
        this.chat.emit("message", event as unknown as MessageEvent);
        break;
      case "annotations":
        this.collaboration.emit("annotation", event as unknown as AnnotationEvent);
        break;
      case "notifications":
        this.notifications.emit("notification", event as unknown as NotificationEvent);
        break;
      case "progress":
        this.analytics.emit("progress", event as unknown as ProgressEvent);
        break;
    }
  }

  #onEvent(t: SocketTransport, ns: Namespace, name: string, payload: unknown): void {
    const p = (payload ?? {}) as Record<string, unknown> & Sequenced;
    switch (`${ns}:${name}`) {
      case "chat:message":
        return this.#onStored("message", p, false);
      case "chat:presence":
        return this.chat.emit("presence", p as unknown as PresenceEvent);
      case "chat:typing":
        return this.chat.emit("typing", p as unknown as TypingEvent);
      case "collaboration:annotation":
        return this.#onStored("annotation", p, false);
      case "collaboration:presence":
        return this.collaboration.emit("presence", p as unknown as PresenceEvent);
      case "collaboration:cursor":
        return this.collaboration.emit("cursor", p as unknown as CursorEvent);
      case "notifications:notification":
        return this.#onStored("notification", p, false);
      case "analytics:progress":
        return this.#onStored("progress", p, false);
    }
    if (name === "session:expiring") this.#reauth(t, ns);
    else if (name === "error") {
      this.#report(new CoursecastError(String(p.code ?? "INTERNAL"), String(p.message ?? "server error")));
    }
  }

  /**
   * A stored event to its stream: a socket broadcast (`ordered` false: it may have
   * skipped one), or an SSE event (`ordered`: the contract sends each stream in order
   * and without holes from the cursor it opened with, so it counts as a page of one).
   */
  #onStored(name: SseEventName, p: Record<string, unknown> & Sequenced, ordered: boolean): void {
    const [kind, id] = (
      {
        message: ["messages", p.courseId],
        annotation: ["annotations", p.courseId],
        notification: ["notifications", p.userId],
        progress: ["progress", p.userId],
      } as const
    )[name];
    const key = streamKey(kind, String(id));
    if (ordered) this.#streams.page(key, [p], true);
    else this.#streams.live(key, p);
  }

  /** `session:expiring`: get a fresh token and hand it to the live socket (`reauth`). */
  #reauth(t: SocketTransport, ns: Namespace): void {
    this.#tokens
      .renew(t.tokenGen(ns))
      .then(async (token) => {
        if (token.gen === t.tokenGen(ns)) return; // getToken() had nothing fresher
        await t.request(ns, "reauth", { token: token.value }, this.#opts.ackTimeoutMs);
        t.setTokenGen(ns, token.gen);
        this.#tokens.proven(token.gen);
      })
      .catch((e) => {
        // A socket that dropped meanwhile reconnects with the current token anyway.
        const err = toError(e);
        if (!err.transient) this.#report(err);
      });
  }

  // ---- operations (used by the namespace APIs) ------------------------------------------

  /** Runs a write now if a transport can carry it (the outbox calls this). */
  #exec(op: Op): Promise<unknown> | undefined {
    if (this.#closed) return undefined;
    if (this.#mode === "socket" && this.#socket?.isConnected(op.namespace)) {
      return this.#socket.request(op.namespace, op.event, op.payload, this.#opts.ackTimeoutMs);
    }
    if ((this.#mode === "polling" && this.#status === "polling") || (this.#mode === "sse" && this.#status === "sse")) {
      return this.#http.request(op.http.method, op.http.path, { body: op.http.body });
    }
    return undefined;
  }

  /** @internal */
  _write<T>(op: Op): Promise<T> {
    return this.#outbox.push<T>(op);
  }

  /** @internal */
  _join(ns: CourseNs, courseId: string, since?: number): Promise<JoinResult> {
    if (this.#closed) return Promise.reject(new CoursecastError("CLOSED", "the client is closed"));
    const key = courseKey(ns, courseId);
    this.#streams.track(key);
    if (since !== undefined) this.#streams.reset(key, since);
    let sub = this.#courses[ns].get(courseId);
    if (!sub) this.#courses[ns].set(courseId, (sub = { waiters: [] }));
    const subscription = sub;
    const result = new Promise<JoinResult>((resolve, reject) => subscription.waiters.push({ resolve, reject }));
    if (this.#mode === "socket") void this.#resumeCourse(ns, courseId);
    else if (this.#mode === "sse") this.#sse?.reopen();
    else {
      this.#pollCourse(ns, courseId);
      this.#sse?.reopen(); // a trial: open with this course too
    }
    return result;
  }

  /** @internal */
  async _leave(ns: CourseNs, courseId: string): Promise<{ ok: true }> {
    const sub = this.#courses[ns].get(courseId);
    this.#courses[ns].delete(courseId);
    for (const w of sub?.waiters.splice(0) ?? []) w.reject(new CoursecastError("CLOSED", "left before the join completed"));
    this.#polling?.unwatch(courseKey(ns, courseId));
    if (sub) this.#sse?.reopen();
    if (this.#mode === "socket" && this.#socket?.isConnected(ns)) {
      await this.#socket.request(ns, "leave", { courseId }, this.#opts.ackTimeoutMs);
    }
    return { ok: true };
  }

  /** @internal Ephemeral events (typing, cursor): sockets only; false when not relayed. */
  async _ephemeral(ns: Namespace, event: string, payload: Record<string, unknown>): Promise<boolean> {
    if (this.#mode !== "socket" || !this.#socket?.isConnected(ns)) return false;
    const ack = await this.#socket.request<{ relayed?: boolean }>(ns, event, payload, this.#opts.ackTimeoutMs);
    return ack.relayed !== false;
  }

  /** @internal A page of a room's online users: the socket request, or its HTTP twin while polling. */
  async _presence(ns: CourseNs, courseId: string, options: { after?: string; limit?: number }): Promise<OnlinePage> {
    const payload: Record<string, unknown> = { courseId };
    if (options.after !== undefined) payload.after = options.after;
    if (options.limit !== undefined) payload.limit = options.limit;
    if (this.#mode === "socket" && this.#socket?.isConnected(ns)) {
      const { ok: _ok, ...page } = await this.#socket.request<OnlinePage & { ok: true }>(
        ns,
        "presence",
        payload,
        this.#opts.ackTimeoutMs,
      );
      return page;
    }
    const query = new URLSearchParams({ namespace: ns });
    if (options.after !== undefined) query.set("after", options.after);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    return this.#http.request<OnlinePage>("GET", `/api/realtime/presence/${encodeURIComponent(courseId)}?${query}`);
  }

  /** @internal */
  async _watch(courseId: string): Promise<{ ok: true }> {
    if (this.#mode === "sse" && this.#sse && !this.#watched.has(courseId)) {
      this.#watched.add(courseId);
      const answered = new Promise<{ ok: true }>((resolve, reject) => {
        const waiters = this.#watchWaiters.get(courseId) ?? [];
        waiters.push({ resolve, reject });
        this.#watchWaiters.set(courseId, waiters);
      });
      this.#sse.reopen();
      return answered;
    }
    this.#watched.add(courseId);
    if (this.#mode === "polling") this.#sse?.reopen(); // a trial: open with this watch too
    if (this.#mode === "socket" && this.#socket?.isConnected("analytics")) {
      try {
        await this.#socket.request("analytics", "watch", { courseId }, this.#opts.ackTimeoutMs);
      } catch (err) {
        if (!toError(err).transient) this.#watched.delete(courseId);
        throw err;
      }
    }
    return { ok: true };
  }
}

function courseKey(ns: CourseNs, courseId: string): string {
  return streamKey(ns === "chat" ? "messages" : "annotations", courseId);
}

/** The HTTP endpoint of a stored stream (long polling, catch-up reads). */
function streamPath(key: string): string {
  const { kind, id } = parseKey(key);
  const path = {
    messages: "/api/realtime/messages/",
    annotations: "/api/realtime/annotations/",
    notifications: "/api/realtime/notifications/",
    progress: "/api/realtime/progress/",
  }[kind];
  return path + encodeURIComponent(id);
}
