// Starts the real coursecast binary for a test file: a fresh data directory (SQLite),
// a free port, a fixed JWT secret, demo data from `coursecast seed`.
//
//   const server = await startServer({ students: 4, env: { WEBSOCKET_MAX_CONNECTIONS: "2" } });
//   t.after(() => server.stop());
//   server.url, server.seed.users[0].token, ...

import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

const here = path.dirname(fileURLToPath(import.meta.url));
export const E2E_DIR = path.resolve(here, "..");
export const BIN = path.resolve(E2E_DIR, process.env.COURSECAST_BIN ?? "../target/debug/coursecast");
export const JWT_SECRET = "coursecast-e2e-fixed-test-secret-0123456789abcdef";
export const ALLOWED_ORIGIN = "http://localhost:5173";

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const SEED_TIMEOUT_MS = 60_000;
const LOG_TAIL_CHARS = 20_000;

// Settings the server reads; the parent environment must not leak any of them in.
const SERVER_VARS = [
  "HOST", "PORT", "DATA_DIR", "DATABASE_URL", "DATABASE_MAX_CONNECTIONS", "REDIS_URL",
  "JWT_SECRET", "JWT_TTL", "JWT_ISSUER", "JWT_AUDIENCE", "WEBSOCKET_CORS_ORIGIN",
  "WEBSOCKET_PING_INTERVAL", "WEBSOCKET_PING_TIMEOUT", "WEBSOCKET_MAX_CONNECTIONS",
  "WEBSOCKET_MAX_SOCKETS_PER_USER", "WEBSOCKET_MAX_PAYLOAD", "SOCKET_EVENTS_PER_SECOND",
  "SOCKET_EVENTS_BURST", "SOCKET_CONNECTS_PER_SECOND_PER_IP", "ENABLE_WEBSOCKET_FALLBACK",
  "POLLING_INTERVAL", "MESSAGE_MAX_CHARS", "MAX_BODY_BYTES", "AUTH_RATE_PER_SECOND",
  "AUTH_RATE_BURST", "REQUEST_TIMEOUT", "LOG_FORMAT", "LOG_LEVEL", "RUST_LOG",
];

// Servers still running when this test process exits (a crash, Ctrl-C) are killed.
const live = new Set();
process.once("exit", () => {
  for (const proc of live) proc.kill("SIGKILL");
});

const TIMEOUT = Symbol("timeout");

/** `promise`'s value, or TIMEOUT after `ms` (the timer never outlives the race). */
async function raceTimeout(promise, ms) {
  let timer;
  const expired = new Promise((resolve) => {
    timer = setTimeout(() => resolve(TIMEOUT), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A free TCP port on 127.0.0.1 (the OS picks one; we release it at once). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Optional PostgreSQL: when TEST_DATABASE_URL is set, each server gets a fresh schema
 * (dropped again by stop()); otherwise SQLite in the data directory.
 */
function postgresDatabase() {
  const base = process.env.TEST_DATABASE_URL;
  if (!base) return undefined;
  const schema = `s_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
  psql(base, `CREATE SCHEMA ${schema}`);
  const sep = base.includes("?") ? "&" : "?";
  return {
    url: `${base}${sep}options=-c%20search_path%3D${schema}`,
    drop: () => psql(base, `DROP SCHEMA IF EXISTS ${schema} CASCADE`),
  };
}

function psql(url, sql) {
  execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning" },
    timeout: 20_000,
  });
}

function buildEnv(port, dataDir, databaseUrl, overrides) {
  const env = { ...process.env };
  for (const name of SERVER_VARS) delete env[name];
  Object.assign(env, {
    PORT: String(port),
    HOST: "127.0.0.1",
    DATA_DIR: dataDir,
    JWT_SECRET,
    WEBSOCKET_CORS_ORIGIN: ALLOWED_ORIGIN,
    LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? "warn",
    LOG_FORMAT: "pretty",
  });
  if (databaseUrl) env.DATABASE_URL = databaseUrl;
  for (const [k, v] of Object.entries(overrides ?? {})) {
    if (v === undefined || v === null) delete env[k];
    else env[k] = String(v);
  }
  return env;
}

/** Runs `coursecast seed` with the server's environment and returns the parsed JSON. */
function runSeed(env, workDir, students) {
  const out = path.join(workDir, "seed.json");
  execFileSync(BIN, ["seed", "--students", String(students), "--out", out], {
    env,
    cwd: workDir, // no stray .env is picked up from the repository
    stdio: ["ignore", "pipe", "pipe"],
    timeout: SEED_TIMEOUT_MS,
  });
  return JSON.parse(fs.readFileSync(out, "utf8"));
}

async function waitHealthy(url, child, logs) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`coursecast exited during start-up (code ${child.exitCode}, signal ${child.signalCode})\n${logs()}`);
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`coursecast did not answer GET /healthz with 200 within ${STARTUP_TIMEOUT_MS} ms\n${logs()}`);
}

/**
 * Seeds and starts a server. Options: `students` (default 4), `env` (overrides; a
 * value of null removes a variable).
 */
export async function startServer({ students = 4, env: overrides = {} } = {}) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`server binary not found at ${BIN}: build it (cargo build -p coursecast --bin coursecast) or set COURSECAST_BIN`);
  }
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "coursecast-e2e-"));
  const dataDir = path.join(workDir, "data");
  fs.mkdirSync(dataDir);
  const port = await freePort();
  const database = postgresDatabase();
  const env = buildEnv(port, dataDir, database?.url, overrides);
  const cleanUp = () => {
    fs.rmSync(workDir, { recursive: true, force: true });
    database?.drop();
  };
  let seed;
  try {
    seed = runSeed(env, workDir, students);
  } catch (err) {
    cleanUp();
    throw new Error(`coursecast seed failed: ${err.message}\n${err.stderr ?? ""}`);
  }
  const url = `http://127.0.0.1:${port}`;

  let child = null;
  let tail = "";
  const crashes = [];
  const logs = () => (tail ? `--- server output (tail) ---\n${tail}` : "(no server output)");
  const record = (chunk) => {
    tail = (tail + chunk.toString()).slice(-LOG_TAIL_CHARS);
    if (process.env.E2E_SERVER_LOG) process.stderr.write(chunk);
  };

  async function start() {
    const proc = spawn(BIN, ["serve"], { env, cwd: workDir, stdio: ["ignore", "pipe", "pipe"] });
    child = proc;
    live.add(proc);
    proc.stdout.on("data", record);
    proc.stderr.on("data", record);
    proc.on("exit", (code, signal) => {
      live.delete(proc);
      // An exit nobody asked for is a crash: say so loudly, with the server's output.
      if (proc.stopping) return;
      const message = `coursecast (${url}) exited unexpectedly: code ${code}, signal ${signal}`;
      crashes.push(message);
      process.stderr.write(`\n!!! ${message}\n${logs()}\n`);
    });
    try {
      await waitHealthy(url, child, logs);
    } catch (err) {
      await stopChild();
      throw err;
    }
  }

  async function stopChild() {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.stopping = true;
    proc.kill("SIGTERM");
    if ((await raceTimeout(exited, STOP_TIMEOUT_MS)) === TIMEOUT) {
      proc.kill("SIGKILL");
      await raceTimeout(exited, 2000);
      throw new Error(`coursecast did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM (killed)\n${logs()}`);
    }
  }

  try {
    await start();
  } catch (err) {
    cleanUp();
    throw err;
  }

  let stopped = false;
  return {
    url,
    port,
    seed,
    dataDir,
    env,
    logs,
    /** Unexpected exits so far (a test may assert this is empty). */
    crashes,
    /** SIGTERM, wait for exit, remove the data directory. Safe to call twice. */
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await stopChild();
      } finally {
        cleanUp();
      }
      if (crashes.length) throw new Error(`the server crashed during the tests: ${crashes.join("; ")}`);
    },
    /** Stops and starts the same server again (same port, same data). */
    async restart() {
      await stopChild();
      await start();
    },
  };
}
