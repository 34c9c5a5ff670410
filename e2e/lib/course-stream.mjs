// A course chat client that behaves as docs/PROTOCOL.md tells clients to, and keeps
// the books the cluster suite checks: the official socket.io-client on /chat,
// connecting through nginx from its own source address and reconnecting by itself;
// it keeps one course stream by `seq`, repairs gaps and reconnects from its cursor
// with `join {since}` (paging while `hasMore`), and remembers how each event arrived
// (live, or replayed by a join). A Sender on top sends with acks and retries a send
// that got no answer with the same `clientMsgId`, as the protocol says.

import http from "node:http";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { io } from "socket.io-client";

const ACK_TIMEOUT_MS = 3000;
/** A live event above the cursor may only be reordered (two nodes relay independently):
 * wait this long for the missing ones before asking the server for them. */
const GAP_GRACE_MS = 300;
const PAGE = 1000;

export const now = () => performance.now();

export class Follower {
  /**
   * `url`: nginx; `transports`: ["websocket"] or ["polling"]; `localAddress`: the
   * source address of every connection this client opens (nginx's ip_hash picks
   * the node from it).
   */
  constructor({ url, name, token, transports, localAddress }) {
    this.name = name;
    this.transport = transports.join("+");
    this.localAddress = localAddress;
    // engine.io-client hands `agent` to both transports (xhr polling and ws) in Node.
    this.agent = new http.Agent({ localAddress, keepAlive: true });
    this.socket = io(`${url}/chat`, {
      transports,
      forceNew: true,
      auth: { token },
      agent: this.agent,
      timeout: 5000,
      reconnectionDelay: 250,
      reconnectionDelayMax: 1000,
    });
    /** One entry per lost connection: {reason, lostAt, connectedAt?, repairedAt?}. */
    this.outages = [];
    this.stream = null;
    this.repairErrors = 0;
    /** Rejecters of connected() waits, all called by close(). */
    this.waiting = new Set();
    this.socket.on("disconnect", (reason) => this.outages.push({ reason, lostAt: now() }));
    this.socket.on("connect", () => {
      const outage = this.outages.at(-1);
      if (!outage || outage.connectedAt) return; // the first connect
      outage.connectedAt = now();
      // A new connection is in no room: join again from the cursor (PROTOCOL.md §3).
      if (this.stream) {
        this.repair().then(
          () => { outage.repairedAt ??= now(); },
          () => { this.repairErrors++; },
        );
      }
    });
    this.socket.on("message", (event) => this.onLive(event));
  }

  /** Resolves once connected (rejects after `ms`, or when the client is closed). */
  connected(ms = 15_000) {
    if (this.socket.connected) return Promise.resolve();
    if (this.closed) return Promise.reject(new Error(`${this.name} is closed`));
    return new Promise((resolve, reject) => {
      const onConnect = () => settle();
      const settle = (err) => {
        clearTimeout(timer);
        this.socket.off("connect", onConnect);
        this.waiting.delete(settle);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(
        () => settle(new Error(`${this.name} (${this.transport}, ${this.localAddress}) not connected within ${ms} ms`)),
        ms,
      );
      this.socket.once("connect", onConnect);
      this.waiting.add(settle);
    });
  }

  /** Starts keeping `courseId`'s stream from its beginning (a fresh course). */
  follow(courseId) {
    this.stream = {
      courseId,
      bySeq: new Map(), // seq -> {event, live, replayed}
      cursor: 0, // every seq up to this one is here
      overlaps: 0, // an event seen again (live and replayed), dropped as the protocol says
      conflicts: [], // the same seq with another event: never allowed
      repairs: 0,
    };
    return this.repair();
  }

  record(event, how) {
    const stream = this.stream;
    const known = stream.bySeq.get(event.seq);
    if (known) {
      if (known.event.messageId !== event.messageId || known.event.content !== event.content) {
        stream.conflicts.push({ seq: event.seq, first: known.event, then: event });
      } else {
        stream.overlaps++;
      }
      known[how] = true;
      return;
    }
    stream.bySeq.set(event.seq, { event, live: how === "live", replayed: how === "replay" });
    while (stream.bySeq.has(stream.cursor + 1)) stream.cursor++;
  }

  onLive(event) {
    if (!this.stream || event.courseId !== this.stream.courseId) return;
    this.record(event, "live");
    if (event.seq > this.stream.cursor + 1 && !this.gapTimer) {
      this.gapTimer = setTimeout(() => {
        this.gapTimer = null;
        if (this.maxSeq() > this.stream.cursor) this.repair().catch(() => { this.repairErrors++; });
      }, GAP_GRACE_MS);
    }
  }

  maxSeq() {
    return Math.max(0, ...this.stream.bySeq.keys());
  }

  /**
   * `join {courseId, since: cursor}` until `hasMore` is false, recording `missed`.
   * Calls while one runs make it run once more afterwards (never two at once).
   */
  repair() {
    if (this.repairing) {
      this.repairAgain = true;
      return this.repairing;
    }
    this.repairing = (async () => {
      let failure;
      do {
        this.repairAgain = false;
        failure = undefined;
        try {
          await this.joinFromCursor();
        } catch (err) {
          failure = err;
        }
      } while (this.repairAgain);
      if (failure) throw failure;
    })().finally(() => {
      this.repairing = null;
    });
    return this.repairing;
  }

  async joinFromCursor() {
    const stream = this.stream;
    let since = stream.cursor;
    for (;;) {
      const reply = await this.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("join", { courseId: stream.courseId, since, limit: PAGE });
      if (reply?.ok !== true) throw new Error(`${this.name}: join refused: ${JSON.stringify(reply)}`);
      stream.repairs++;
      for (const event of reply.missed) this.record(event, "replay");
      if (!reply.hasMore) return;
      since = reply.cursor;
    }
  }

  /** The stream in seq order. */
  events() {
    return [...this.stream.bySeq.entries()].sort((a, b) => a[0] - b[0]).map(([, entry]) => entry);
  }

  close() {
    this.closed = true;
    for (const settle of this.waiting) settle(new Error(`${this.name} is closed`));
    clearTimeout(this.gapTimer);
    this.socket.io.reconnection(false);
    this.socket.disconnect();
    this.socket.io.engine?.close();
    this.agent.destroy();
  }
}

/** Sends `send` with acks through a Follower's socket, one at a time, `perSecond` a second. */
export class Sender {
  constructor(follower, { perSecond }) {
    this.follower = follower;
    this.interval = 1000 / perSecond;
    /** Every message: {clientMsgId, content, attempts: [{at, ms?, error?}], event?}. */
    this.messages = [];
  }

  /** Sends to `courseId` until stop(); `messages` holds this run's messages. */
  start(courseId, tag) {
    this.stopping = false;
    this.messages = [];
    this.loop = this.run(courseId, tag);
    // A failure is reported by stop(); do not let it go unhandled meanwhile.
    this.loop.catch(() => {});
  }

  /** Whether a send is waiting for its ack right now. */
  inFlight() {
    const attempt = this.messages.at(-1)?.attempts.at(-1);
    return Boolean(attempt) && attempt.ms === undefined && attempt.error === undefined;
  }

  /** Stops after the message in flight has its answer; rejects if one never got it. */
  async stop() {
    this.stopping = true;
    await this.loop;
  }

  async run(courseId, tag) {
    for (let n = 1; !this.stopping; n++) {
      const started = now();
      await this.deliver(courseId, `${tag}-${this.follower.name}-${n}`);
      await sleep(Math.max(0, this.interval - (now() - started)));
    }
  }

  async deliver(courseId, clientMsgId) {
    const message = { clientMsgId, content: `cluster e2e ${clientMsgId}`, attempts: [] };
    this.messages.push(message);
    const deadline = now() + 20_000;
    const socket = this.follower.socket;
    while (now() < deadline) {
      await this.follower.connected(Math.max(1, deadline - now()));
      const attempt = { at: now() };
      message.attempts.push(attempt);
      let reply;
      try {
        reply = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("send", { courseId, content: message.content, clientMsgId });
      } catch (err) {
        // No answer (timeout, or the connection went): the send may or may not be
        // stored; the same clientMsgId again is safe either way.
        attempt.error = err.message;
        continue;
      }
      attempt.ms = now() - attempt.at;
      if (reply?.ok === true) {
        message.event = reply.event;
        return;
      }
      attempt.error = JSON.stringify(reply);
      if (reply?.error?.code !== "UNAVAILABLE") throw new Error(`${clientMsgId}: send refused: ${attempt.error}`);
      await sleep(200);
    }
    throw new Error(`${clientMsgId}: no ack within 20 s (${message.attempts.length} attempts: ${message.attempts.map((a) => a.error).join("; ")})`);
  }
}

/** The `p`th percentile (0-100) of `values` (nearest rank), or NaN for none. */
export function percentile(values, p) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
