// The baseline of BENCHMARKS.md: the subset of coursecast's wire contract
// (docs/PROTOCOL.md) that the load generator exercises, on the stack the platform was
// first written for: Node.js, Express 5, Socket.IO 4.8. Everything is in memory and
// nothing is stored, and it checks less than coursecast does (any authenticated user
// may join any course; no per-socket or per-IP rate limits; no presence; tokens are
// verified but not checked against a user table), so the comparison flatters the
// baseline.
//
//   JWT_SECRET=... PORT=4000 node server.mjs
//
// Contract subset:
//   /chat namespace, token in `auth.token` or `Authorization: Bearer` (HS256, JWT_SECRET)
//   join {courseId, since?}        -> {ok, courseId, cursor, missed, hasMore, online: []}
//   send {courseId, content, clientMsgId} -> {ok, event}; room gets `message` event
//   GET  /api/realtime/messages/:courseId?since=&limit=&wait=  (long polling)
//   POST /api/realtime/messages/:courseId {content, clientMsgId} -> 201 {ok, event}
//   POST /api/courses {title} -> 201 {course}; POST /api/courses/:id/members {userId} -> 201 {member}
//   GET  /healthz

import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

import express from "express";
import { Server } from "socket.io";

const PORT = Number(process.env.PORT ?? 4000);
const SECRET = process.env.JWT_SECRET;
if (!SECRET) {
  console.error("JWT_SECRET must be set (the same secret coursecast signs the seeded tokens with)");
  process.exit(2);
}
const MESSAGE_MAX_CHARS = 4000;
/// Events kept per course (older ones are forgotten: this is not storage).
const KEEP_EVENTS = 200_000;
const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;
const MAX_WAIT_SECS = 30;
const CLIENT_MSG_ID = /^[A-Za-z0-9_-]{1,64}$/;
const ROLES = new Set(["STUDENT", "PROFESSOR", "ADMIN"]);

// ---------------------------------------------------------------- tokens (HS256)

class AuthError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const b64urlJson = (part) => JSON.parse(Buffer.from(part, "base64url").toString("utf8"));

function verifyToken(token) {
  if (!token) throw new AuthError("TOKEN_MISSING", "no token was given");
  const parts = token.split(".");
  if (parts.length !== 3) throw new AuthError("TOKEN_INVALID", "malformed token");
  let header, claims;
  try {
    header = b64urlJson(parts[0]);
    claims = b64urlJson(parts[1]);
  } catch {
    throw new AuthError("TOKEN_INVALID", "malformed token");
  }
  if (header.alg !== "HS256") throw new AuthError("TOKEN_INVALID", "only HS256 is accepted");
  const expected = createHmac("sha256", SECRET).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new AuthError("TOKEN_INVALID", "bad signature");
  }
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.sub !== "string" || typeof claims.exp !== "number" || typeof claims.iat !== "number") {
    throw new AuthError("TOKEN_INVALID", "missing claims");
  }
  if (!ROLES.has(claims.role)) throw new AuthError("TOKEN_INVALID", "unknown role");
  if (typeof claims.nbf === "number" && claims.nbf > now + 30) throw new AuthError("TOKEN_INVALID", "not yet valid");
  if (claims.exp + 30 < now) throw new AuthError("TOKEN_EXPIRED", "the token has expired");
  return { id: claims.sub, role: claims.role };
}

function bearer(value) {
  if (!value) return undefined;
  const [scheme, token] = value.split(" ");
  return scheme?.toLowerCase() === "bearer" ? token?.trim() : undefined;
}

// ---------------------------------------------------------------- in-memory streams

const fail = (code, message) => ({ ok: false, error: { code, message } });
const STATUS = { VALIDATION_FAILED: 400, TOKEN_MISSING: 401, TOKEN_INVALID: 401, TOKEN_EXPIRED: 401, FORBIDDEN: 403, NOT_FOUND: 404, UNAVAILABLE: 503 };

class Course {
  constructor(id) {
    this.id = id;
    this.head = 0;
    /// events[i].seq === this.first + i
    this.first = 1;
    this.events = [];
    this.sent = new Map(); // `${senderId} ${clientMsgId}` -> event (idempotency)
    this.waiters = new Set();
  }

  page(since, limit) {
    const start = Math.max(0, since + 1 - this.first);
    const events = this.events.slice(start, start + limit);
    const cursor = events.length ? events[events.length - 1].seq : since;
    return { events, cursor, hasMore: cursor < this.head };
  }

  append(senderId, content, clientMsgId) {
    const key = `${senderId} ${clientMsgId}`;
    const original = this.sent.get(key);
    if (original) return { event: original, duplicate: true };
    const event = {
      type: "message_sent",
      seq: ++this.head,
      messageId: randomUUID(),
      courseId: this.id,
      senderId,
      content,
      timestamp: new Date().toISOString(),
    };
    this.events.push(event);
    this.sent.set(key, event);
    if (this.events.length > KEEP_EVENTS * 1.5) {
      const drop = this.events.length - KEEP_EVENTS;
      this.events.splice(0, drop);
      this.first += drop;
      // Map iterates in insertion order: the oldest keys go first.
      let n = 0;
      for (const key of this.sent.keys()) {
        if (n++ >= drop) break;
        this.sent.delete(key);
      }
    }
    return { event, duplicate: false };
  }
}

const courses = new Map();
const course = (id) => {
  let c = courses.get(id);
  if (!c) courses.set(id, (c = new Course(id)));
  return c;
};

function validateSend(body) {
  const content = typeof body?.content === "string" ? body.content.trim() : "";
  if (content.length < 1 || content.length > MESSAGE_MAX_CHARS) {
    return fail("VALIDATION_FAILED", `content must be 1-${MESSAGE_MAX_CHARS} characters`);
  }
  if (typeof body.clientMsgId !== "string" || !CLIENT_MSG_ID.test(body.clientMsgId)) {
    return fail("VALIDATION_FAILED", "clientMsgId must be 1-64 of A-Z a-z 0-9 _ -");
  }
  return { ok: true, content, clientMsgId: body.clientMsgId };
}

/// Stores (in memory) and broadcasts one message; the one publish path of the baseline.
function publish(user, courseId, body) {
  const valid = validateSend(body);
  if (!valid.ok) return valid;
  const c = course(courseId);
  const { event, duplicate } = c.append(user.id, valid.content, valid.clientMsgId);
  if (!duplicate) {
    chat.to(`course:${courseId}`).emit("message", event);
    for (const waiter of c.waiters) waiter(event);
  }
  return { ok: true, event };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ---------------------------------------------------------------- HTTP (Express 5)

const app = express();
app.disable("x-powered-by");
app.disable("etag");
app.use(express.json({ limit: "64kb" }));

app.get("/healthz", (_req, res) => res.json({ ok: true }));

const requireUser = (req, res, next) => {
  try {
    req.user = verifyToken(bearer(req.get("authorization")));
    next();
  } catch (err) {
    res.status(STATUS[err.code] ?? 401).json({ error: { code: err.code, message: err.message } });
  }
};

const sendError = (res, answer) => res.status(STATUS[answer.error.code] ?? 500).json({ error: answer.error });

app.post("/api/courses", requireUser, (req, res) => {
  if (req.user.role === "STUDENT") return sendError(res, fail("FORBIDDEN", "students cannot create courses"));
  const title = typeof req.body?.title === "string" ? req.body.title.trim() : "";
  if (!title) return sendError(res, fail("VALIDATION_FAILED", "title is required"));
  const id = randomUUID();
  course(id);
  res.status(201).json({ course: { id, title, professorId: req.user.id, createdAt: new Date().toISOString() } });
});

app.post("/api/courses/:courseId/members", requireUser, (req, res) => {
  if (!UUID.test(req.params.courseId) || typeof req.body?.userId !== "string") {
    return sendError(res, fail("VALIDATION_FAILED", "bad ids"));
  }
  res.status(201).json({ member: { userId: req.body.userId, displayName: "", role: "STUDENT" } });
});

app.get("/api/realtime/messages/:courseId", requireUser, (req, res) => {
  const { courseId } = req.params;
  if (!UUID.test(courseId)) return sendError(res, fail("VALIDATION_FAILED", "bad courseId"));
  const since = Math.max(0, Number(req.query.since ?? 0) || 0);
  const limit = Math.min(MAX_PAGE, Math.max(1, Number(req.query.limit ?? DEFAULT_PAGE) || DEFAULT_PAGE));
  const wait = Math.min(MAX_WAIT_SECS, Math.max(0, Number(req.query.wait ?? 0) || 0));
  const c = course(courseId);
  const page = c.page(since, limit);
  if (page.events.length || wait === 0) return res.json(page);
  let timer;
  const waiter = () => {
    c.waiters.delete(waiter);
    clearTimeout(timer);
    res.json(c.page(since, limit));
  };
  timer = setTimeout(waiter, wait * 1000);
  c.waiters.add(waiter);
  req.on("close", () => {
    if (c.waiters.delete(waiter)) clearTimeout(timer);
  });
});

app.post("/api/realtime/messages/:courseId", requireUser, (req, res) => {
  if (!UUID.test(req.params.courseId)) return sendError(res, fail("VALIDATION_FAILED", "bad courseId"));
  const answer = publish(req.user, req.params.courseId, req.body);
  if (!answer.ok) return sendError(res, answer);
  res.status(201).json(answer);
});

app.use((_req, res) => res.status(404).json({ error: { code: "NOT_FOUND", message: "no such route" } }));

// ---------------------------------------------------------------- Socket.IO 4.8

const http = createServer(app);
const io = new Server(http, {
  serveClient: false,
  pingInterval: 25_000,
  pingTimeout: 60_000,
  maxHttpBufferSize: 64 * 1024,
  connectTimeout: 10_000,
});
const chat = io.of("/chat");

chat.use((socket, next) => {
  try {
    const token = socket.handshake.auth?.token ?? bearer(socket.handshake.headers.authorization);
    socket.data.user = verifyToken(token);
    next();
  } catch (err) {
    next(new Error(err.code ?? "TOKEN_INVALID"));
  }
});

chat.on("connection", (socket) => {
  const reply = (ack, answer) => (typeof ack === "function" ? ack(answer) : answer.ok || socket.emit("error", answer.error));

  socket.on("join", (payload, ack) => {
    const courseId = payload?.courseId;
    if (typeof courseId !== "string" || !UUID.test(courseId)) {
      return reply(ack, fail("VALIDATION_FAILED", "courseId must be a UUID"));
    }
    socket.join(`course:${courseId}`);
    const c = course(courseId);
    if (payload.since === undefined || payload.since === null) {
      return reply(ack, { ok: true, courseId, cursor: c.head, missed: [], hasMore: false, online: [] });
    }
    const page = c.page(Math.max(0, Number(payload.since) || 0), DEFAULT_PAGE);
    reply(ack, { ok: true, courseId, cursor: page.cursor, missed: page.events, hasMore: page.hasMore, online: [] });
  });

  socket.on("leave", (payload, ack) => {
    if (typeof payload?.courseId === "string") socket.leave(`course:${payload.courseId}`);
    reply(ack, { ok: true });
  });

  socket.on("send", (payload, ack) => {
    const courseId = payload?.courseId;
    if (typeof courseId !== "string" || !UUID.test(courseId)) {
      return reply(ack, fail("VALIDATION_FAILED", "courseId must be a UUID"));
    }
    reply(ack, publish(socket.data.user, courseId, payload));
  });
});

http.listen(PORT, "0.0.0.0", () => console.log(`baseline listening on :${PORT}`));

const stop = () => {
  io.close();
  http.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
