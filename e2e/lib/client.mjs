// Helpers around the official socket.io-client: opening sockets that are always
// closed, bounded waits for events, acks with a timeout, HTTP calls and token signing.

import { createHmac } from "node:crypto";
import { io } from "socket.io-client";
import { JWT_SECRET } from "./server.mjs";

export const DEFAULT_TIMEOUT_MS = 5000;

/** The transport set-ups every socket test runs with. */
export const TRANSPORTS = [
  { name: "websocket", transports: ["websocket"] },
  { name: "polling", transports: ["polling"] },
  { name: "polling+upgrade", transports: ["polling", "websocket"] },
];

export const NAMESPACES = ["/chat", "/notifications", "/analytics", "/collaboration"];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects after `ms` with `what` unless `promise` settles first. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Opens sockets and remembers them so that `closeAll()` (from `t.after`) closes
 * every one, whatever the test did.
 */
export class Sockets {
  constructor(url) {
    this.url = url;
    this.all = new Set();
  }

  /** A new socket (not yet connected). `opts` go to `io()` as they are. */
  open(namespace, { token, transport = TRANSPORTS[0], ...opts } = {}) {
    const options = {
      transports: transport.transports,
      reconnection: false,
      forceNew: true,
      timeout: DEFAULT_TIMEOUT_MS,
      ...opts,
    };
    if (token !== undefined) options.auth = { token };
    const socket = io(this.url + namespace, options);
    this.all.add(socket);
    return socket;
  }

  /** A new socket that has connected (rejects on connect_error or timeout). */
  async connect(namespace, options) {
    const socket = this.open(namespace, options);
    await connected(socket);
    return socket;
  }

  closeAll() {
    for (const socket of this.all) close(socket);
    this.all.clear();
  }
}

/** Closes a socket and its (forceNew, so private) manager and Engine.IO connection. */
export function close(socket) {
  try {
    socket.disconnect();
  } catch {
    // already gone
  }
  try {
    socket.io?.engine?.close();
  } catch {
    // already gone
  }
}

/** Resolves on `connect`; rejects with the connect_error (or a timeout). */
export function connected(socket, ms = DEFAULT_TIMEOUT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return withTimeout(
    new Promise((resolve, reject) => {
      const onConnect = () => {
        socket.off("connect_error", onError);
        resolve(socket);
      };
      const onError = (err) => {
        socket.off("connect", onConnect);
        const wrapped = new Error(`connect_error: ${err.message}`);
        wrapped.cause = err;
        reject(wrapped);
      };
      socket.once("connect", onConnect);
      socket.once("connect_error", onError);
    }),
    ms,
    `connect on ${socket.nsp}`,
  );
}

/** Resolves with the connect_error; rejects if the socket connects instead. */
export function connectError(socket, ms = DEFAULT_TIMEOUT_MS) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const onError = (err) => {
        socket.off("connect", onConnect);
        resolve(err);
      };
      const onConnect = () => {
        socket.off("connect_error", onError);
        reject(new Error(`expected connect_error on ${socket.nsp}, but the socket connected`));
      };
      socket.once("connect_error", onError);
      socket.once("connect", onConnect);
    }),
    ms,
    `connect_error on ${socket.nsp}`,
  );
}

/** Resolves with the first `event` payload (for which `filter` holds). */
export function waitFor(socket, event, { timeout = DEFAULT_TIMEOUT_MS, filter = () => true, what } = {}) {
  let handler;
  const waiting = withTimeout(
    new Promise((resolve) => {
      handler = (...args) => {
        if (!filter(...args)) return;
        socket.off(event, handler);
        resolve(args[0]);
      };
      socket.on(event, handler);
    }),
    timeout,
    `"${event}" on ${socket.nsp ?? "the engine"}${what ? ` (${what})` : ""}`,
  ).finally(() => socket.off(event, handler));
  // Often started before the action that triggers it and awaited after: a timeout
  // must surface where it is awaited, not as an unhandled rejection meanwhile.
  waiting.catch(() => {});
  return waiting;
}

/** Resolves with the disconnect reason. */
export function disconnected(socket, ms = DEFAULT_TIMEOUT_MS) {
  return waitFor(socket, "disconnect", { timeout: ms });
}

/** Resolves true if `event` does not arrive within `ms` (false if it does). */
export async function staysQuiet(socket, event, ms = 500, filter = () => true) {
  try {
    await waitFor(socket, event, { timeout: ms, filter });
    return false;
  } catch {
    return true;
  }
}

/** Records every payload of `event` from now on, in order. */
export function collect(socket, event) {
  const seen = [];
  socket.on(event, (payload) => seen.push(payload));
  return seen;
}

/** Emits with an ack and resolves with the ack's argument (bounded). */
export async function ack(socket, event, payload, ms = DEFAULT_TIMEOUT_MS) {
  try {
    return await socket.timeout(ms).emitWithAck(event, payload);
  } catch (err) {
    const state = socket.connected ? "connected" : "not connected";
    throw new Error(`no ack for "${event}" ${JSON.stringify(payload)} on ${socket.nsp} within ${ms} ms (${state}): ${err.message}`);
  }
}

/** Emits with an ack and asserts the ack is `{ok: true, ...}`; resolves with it. */
export async function ackOk(socket, event, payload, ms = DEFAULT_TIMEOUT_MS) {
  const reply = await ack(socket, event, payload, ms);
  if (reply?.ok !== true) {
    throw new Error(`"${event}" ${JSON.stringify(payload)} on ${socket.nsp}: expected {ok: true, ...}, got ${JSON.stringify(reply)}`);
  }
  return reply;
}

/** Signs an HS256 JWT with the servers' fixed test secret. */
export function signToken(claims, { secret = JWT_SECRET, header = { alg: "HS256", typ: "JWT" } } = {}) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64(header)}.${b64(claims)}`;
  const signature = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);

/** One HTTP call; resolves {status, headers, body} (body parsed as JSON when it is JSON). */
export async function api(baseUrl, method, path, { token, body, headers = {}, timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(timeout) };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(baseUrl + path, init);
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/**
 * Creates a course as the seeded professor and enrols the given users; returns its id.
 * Gives each test its own message stream.
 */
export async function createCourse(server, title, members = []) {
  const created = await api(server.url, "POST", "/api/courses", { token: server.seed.professor.token, body: { title } });
  if (created.status !== 201) throw new Error(`POST /api/courses: ${created.status} ${JSON.stringify(created.body)}`);
  const courseId = created.body.course.id;
  for (const user of members) {
    const added = await api(server.url, "POST", `/api/courses/${courseId}/members`, {
      token: server.seed.professor.token,
      body: { userId: user.id },
    });
    if (added.status !== 201) throw new Error(`POST members: ${added.status} ${JSON.stringify(added.body)}`);
  }
  return courseId;
}
