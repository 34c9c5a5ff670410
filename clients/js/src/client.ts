import { AnalyticsApi, ChatApi, CollaborationApi, NotificationsApi } from "./api.js";
import { CoursecastError, FATAL_AUTH_CODES, toError } from "./errors.js";
import { Emitter } from "./emitter.js";
import { Http } from "./http.js";
import { Outbox, type Op } from "./queue.js";
import { Streams, parseKey, streamKey, type Sequenced } from "./streams/cursors.js";
import { type GetToken, Tokens } from "./tokens.js";
import { PollingTransport } from "./transport/polling.js";
import { NAMESPACES, type Namespace, SocketTransport } from "./transport/socket.js";
import type {
  AnnotationEvent,
  CursorEvent,
  JoinResult,
  MessageEvent,
  NotificationEvent,
  OnlinePage,
  Page,
  PresenceEvent,
  ProgressEvent,
  Status,
  TypingEvent,
} from "./types.js";

export interface FallbackOptions {
  /** Switch to HTTP polling after this many failed socket connection attempts in a row (default 3). */
  afterFailures: number;
  /** ...or after this many drops of a connected socket (default 3)... */
  maxDrops: number;
  /** ...within this window (default 60 s). */
  dropWindowMs: number;
  /** While polling, check this often whether sockets work again (default 10 s). */
  probeIntervalMs: number;
  /** Long-poll `wait`, seconds (default 25). */
  pollWaitSeconds: number;
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
};

/**
 * The client facade: one API for the four namespaces, whichever transport carries
 * them. Sockets first (socket.io-client, reconnecting with backoff); HTTP long
 * polling when they cannot connect or keep dropping; back to sockets when a probe
 * connects again. Streams resume from their cursors on every switch or reconnect.
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
  #mode: "socket" | "polling" = "socket";
  #started = false;
  #closed = false;
  #socket?: SocketTransport;
  #trial?: SocketTransport;
  #trialTimer?: ReturnType<typeof setTimeout>;
  #polling?: PollingTransport;
  #probeTimer?: ReturnType<typeof setInterval>;
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
  get mode(): "socket" | "polling" {
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
      this.#stopPolling();
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
        this.#startPolling();
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
    if (this.#fallback && this.#failures >= this.#fallback.afterFailures) this.#startPolling();
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

  #startPolling(): void {
    if (this.#mode === "polling" || this.#closed) return;
    this.#socket?.stop();
    this.#socket = undefined;
    this.#mode = "polling";
    if (this.#status === "online") this.#setStatus("connecting");
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
    this.#probeTimer = setInterval(() => void this.#probe(), fallback.probeIntervalMs);
  }

  #stopPolling(): void {
    this.#polling?.stop();
    this.#polling = undefined;
    if (this.#probeTimer) clearInterval(this.#probeTimer);
    this.#probeTimer = undefined;
  }

  #pollStream(key: string): Promise<number> | undefined {
    const { kind, id } = parseKey(key);
    const path = {
      messages: "/api/realtime/messages/",
      annotations: "/api/realtime/annotations/",
      notifications: "/api/realtime/notifications/",
      progress: "/api/realtime/progress/",
    }[kind];
    return this.#polling?.watch(key, path + encodeURIComponent(id));
  }

  #pollCourse(ns: CourseNs, courseId: string): void {
    this.#pollStream(courseKey(ns, courseId))?.then(
      (cursor) => this.#settle(ns, courseId, { ok: true, courseId, cursor, online: [], onlineCount: 0 }),
      () => {}, // reported through the transport's "refused"
    );
  }

  /** While polling: is the server up and do sockets connect again? */
  async #probe(): Promise<void> {
    if (this.#mode !== "polling" || this.#trial || this.#closed) return;
    try {
      const ping = await this.#http.request<{ websocket?: { available?: boolean } }>("POST", "/api/realtime/ping", {
        auth: false,
        timeoutMs: 5000,
      });
      if (ping.websocket?.available === false) return;
    } catch {
      return;
    }
    if (this.#mode !== "polling" || this.#trial || this.#closed) return;
    this.#trial = this.#startSocket(true);
    this.#trialTimer = setTimeout(() => this.#endTrial(true), this.#opts.connectTimeoutMs + 2000);
  }

  #endTrial(stop: boolean): void {
    if (this.#trialTimer) clearTimeout(this.#trialTimer);
    this.#trialTimer = undefined;
    if (stop) this.#trial?.stop();
    this.#trial = undefined;
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
    this.#stopPolling();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#outbox.close(err);
    for (const ns of ["chat", "collaboration"] as const) {
      for (const sub of this.#courses[ns].values()) for (const w of sub.waiters.splice(0)) w.reject(err);
    }
    this.#setStatus("offline");
  }

  #setStatus(status: Status): void {
    if (status === this.#status) return;
    const previous = this.#status;
    this.#status = status;
    this.emit("status", status, previous);
  }

  /** Backoff for retries of our own (writes, polls): like socket.io-client's. */
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

  /** A live event skipped ahead of its stream's cursor: read the hole (polling reads it anyway). */
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
        return this.#streams.live(streamKey("messages", String(p.courseId)), p);
      case "chat:presence":
        return this.chat.emit("presence", p as unknown as PresenceEvent);
      case "chat:typing":
        return this.chat.emit("typing", p as unknown as TypingEvent);
      case "collaboration:annotation":
        return this.#streams.live(streamKey("annotations", String(p.courseId)), p);
      case "collaboration:presence":
        return this.collaboration.emit("presence", p as unknown as PresenceEvent);
      case "collaboration:cursor":
        return this.collaboration.emit("cursor", p as unknown as CursorEvent);
      case "notifications:notification":
        return this.#streams.live(streamKey("notifications", String(p.userId)), p);
      case "analytics:progress":
        return this.#streams.live(streamKey("progress", String(p.userId)), p);
    }
    if (name === "session:expiring") this.#reauth(t, ns);
    else if (name === "error") {
      this.#report(new CoursecastError(String(p.code ?? "INTERNAL"), String(p.message ?? "server error")));
    }
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
    if (this.#mode === "polling" && this.#status === "polling") {
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
    else this.#pollCourse(ns, courseId);
    return result;
  }

  /** @internal */
  async _leave(ns: CourseNs, courseId: string): Promise<{ ok: true }> {
    const sub = this.#courses[ns].get(courseId);
    this.#courses[ns].delete(courseId);
    for (const w of sub?.waiters.splice(0) ?? []) w.reject(new CoursecastError("CLOSED", "left before the join completed"));
    this.#polling?.unwatch(courseKey(ns, courseId));
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
    this.#watched.add(courseId);
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
