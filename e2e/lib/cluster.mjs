// Several coursecast nodes as docs/OPERATIONS.md deploys them: one PostgreSQL database
// (fresh for the run, dropped at the end), a Redis bus (a private redis-server on a
// free port: the suite restarts it, so never the machine's shared one), one node per
// upstream server of deploy/nginx.conf, and nginx in front with that very file.
//
// Node N listens on 127.0.0.(N+1):3000 and nginx resolves the upstream's compose
// names (node1, node2, ...) to those addresses, so the config runs unchanged.
//
//   const cluster = await startCluster({ students: 18 });
//   cluster.url                       // nginx
//   cluster.nodes[0].url              // node1 directly (for /metrics)
//   await cluster.redis.restart(...)  // the bus goes away and comes back
//   await cluster.stop();

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startChild } from "./children.mjs";
import { nginxBinary, startNginx, upstreamServers } from "./nginx.mjs";
import { BIN, JWT_SECRET, freePort } from "./server.mjs";

const PG_ADMIN_URL = process.env.COURSECAST_TEST_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/postgres";
const READY_TIMEOUT_MS = 30_000;
const SEED_TIMEOUT_MS = 60_000;
const echo = Boolean(process.env.E2E_SERVER_LOG);

/**
 * Below the server's default (200), so that the suite can exceed it from one address
 * cheaply; each client opens one handshake per connection (a few a second at most
 * while it reconnects).
 */
export const SOCKET_CONNECTS_PER_SECOND_PER_IP = 5;

/** What the suite needs and this machine lacks (empty when it can run). */
export function missingPrerequisites() {
  const missing = [];
  if (!fs.existsSync(BIN)) missing.push(`the server binary at ${BIN} (build it, or set COURSECAST_BIN)`);
  if (!nginxBinary()) missing.push("nginx (scripts/check-nginx installs nginx-light)");
  if (process.getuid?.() !== 0) missing.push("root (nginx runs in its own mount namespace: unshare -m, mount --bind)");
  if (!onPath("unshare")) missing.push("unshare (util-linux)");
  if (!onPath("redis-server") || !onPath("redis-cli")) missing.push("redis-server and redis-cli (apt-get install redis-server)");
  if (!onPath("psql")) missing.push("psql (apt-get install postgresql-client)");
  else if (!answers(PG_ADMIN_URL)) missing.push(`PostgreSQL at ${PG_ADMIN_URL} (set COURSECAST_TEST_POSTGRES)`);
  return missing;
}

function onPath(program) {
  return (process.env.PATH ?? "").split(":").some((dir) => dir && fs.existsSync(path.join(dir, program)));
}

function answers(url) {
  try {
    psql(url, "SELECT 1");
    return true;
  } catch {
    return false;
  }
}

function psql(url, sql) {
  execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning" },
    timeout: 20_000,
  });
}

/** A fresh database, dropped (connections and all) by `drop()` or when the process exits. */
function createDatabase() {
  const name = `coursecast_cluster_${process.pid}_${Date.now().toString(36)}`;
  psql(PG_ADMIN_URL, `CREATE DATABASE ${name}`);
  let dropped = false;
  const drop = () => {
    if (dropped) return;
    dropped = true;
    psql(PG_ADMIN_URL, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  };
  process.once("exit", () => {
    try {
      drop();
    } catch {
      // the process is ending; a leftover database is named after its pid
    }
  });
  return { name, url: `${PG_ADMIN_URL.replace(/\/[^/]*$/, "")}/${name}`, drop };
}

/** The suite's own redis-server on a free port; `restart` takes it away and back. */
async function startRedis() {
  const port = await freePort();
  const start = async () => {
    const child = startChild("redis-server", "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { echo });
    await waitFor(`redis-server on port ${port}`, () => redisAnswers(port), child);
    return child;
  };
  const redis = { port, url: `redis://127.0.0.1:${port}`, child: await start() };
  /** Kills the server (SIGKILL: no goodbye to its clients), waits `downMs`, starts it again. */
  redis.restart = async (downMs) => {
    redis.child.kill("SIGKILL");
    await redis.child.exited;
    await sleep(downMs);
    redis.child = await start();
  };
  redis.subscribers = (channel) => redisCli(port, "PUBSUB", "NUMSUB", channel).split("\n")[1];
  redis.stop = () => redis.child.stop();
  return redis;
}

function redisCli(port, ...args) {
  return execFileSync("redis-cli", ["-p", String(port), ...args], { stdio: ["ignore", "pipe", "pipe"], timeout: 5000 })
    .toString().trim();
}

function redisAnswers(port) {
  try {
    return redisCli(port, "PING") === "PONG";
  } catch {
    return false;
  }
}

async function waitFor(what, check, child) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child && !child.running) throw new Error(`${child.name} exited while waiting for ${what}\n${child.logs()}`);
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out after ${READY_TIMEOUT_MS} ms waiting for ${what}${child ? `\n${child.logs()}` : ""}`);
}

/**
 * The environment every node shares (OPERATIONS.md, "Several nodes": the same
 * database, Redis, channel and secret), and nothing inherited from the caller's.
 */
function nodeEnv({ databaseUrl, redisUrl, channel }) {
  return {
    PATH: process.env.PATH,
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_CHANNEL: channel,
    JWT_SECRET,
    LOG_FORMAT: "pretty",
    LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? "warn",
    // nginx connects to the nodes from 127.0.0.1 and names the client (127.0.K.H) in
    // X-Forwarded-For: per-address limits count each client, as with compose.yaml.
    TRUSTED_PROXIES: "127.0.0.1",
    // Counted per TCP peer before any header is read, so every connection is nginx's:
    // lifted, as compose.yaml does.
    MAX_CONNECTIONS_PER_IP: "0",
    SOCKET_CONNECTS_PER_SECOND_PER_IP: String(SOCKET_CONNECTS_PER_SECOND_PER_IP),
    // Three nodes share the machine's PostgreSQL with whatever else runs there.
    DATABASE_MAX_CONNECTIONS: "8",
    SHUTDOWN_TIMEOUT: "5",
  };
}

async function nodeReady(url) {
  try {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
    const body = await res.json();
    return res.status === 200 && body.redis === "up";
  } catch {
    return false;
  }
}

/** Starts one node; `kill(signal)` marks its end as intended. */
async function startNode({ name, host, port, env, workDir }) {
  const dir = path.join(workDir, name);
  fs.mkdirSync(dir, { recursive: true });
  const url = `http://${host}:${port}`;
  const child = startChild(name, BIN, ["serve"], {
    env: { ...env, HOST: host, PORT: String(port), DATA_DIR: dir },
    cwd: dir, // no stray .env is picked up from the repository
    echo,
  });
  await waitFor(`${name} (${url}) to be ready with Redis up`, () => nodeReady(url), child);
  return { name, host, port, url, child };
}

/** Seeds, then starts the nodes, then nginx. `students`: demo users to create. */
export async function startCluster({ students }) {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "coursecast-cluster-"));
  const removeWorkDir = () => fs.rmSync(workDir, { recursive: true, force: true });
  process.once("exit", removeWorkDir); // also after a crash
  const cleanups = [removeWorkDir];
  const stop = async () => {
    const errors = [];
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        errors.push(err);
      }
    }
    cleanups.length = 0;
    if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join("; "));
  };
  try {
    const database = createDatabase();
    cleanups.push(database.drop);
    const redis = await startRedis();
    cleanups.push(redis.stop);
    const channel = `coursecast-e2e-${process.pid}`;
    const env = nodeEnv({ databaseUrl: database.url, redisUrl: redis.url, channel });

    // Seeding applies the migrations first, so the nodes start on a ready schema.
    const seedFile = path.join(workDir, "seed.json");
    try {
      execFileSync(BIN, ["seed", "--students", String(students), "--out", seedFile], {
        env, cwd: workDir, stdio: ["ignore", "pipe", "pipe"], timeout: SEED_TIMEOUT_MS,
      });
    } catch (err) {
      throw new Error(`coursecast seed failed: ${err.message}\n${err.stderr ?? ""}`);
    }
    const seed = JSON.parse(fs.readFileSync(seedFile, "utf8"));

    const upstreams = upstreamServers();
    if (upstreams.length < 2) throw new Error(`deploy/nginx.conf lists ${upstreams.length} upstream server(s)`);
    const nodes = await Promise.all(upstreams.map(([name, port], i) =>
      startNode({ name, host: `127.0.0.${i + 2}`, port, env, workDir })));
    for (const node of nodes) cleanups.push(() => node.child.stop());

    const nginx = await startNginx({ workDir, hosts: Object.fromEntries(nodes.map((n) => [n.name, n.host])) });
    cleanups.push(nginx.stop);

    return {
      url: nginx.url,
      nginx,
      nodes,
      redis,
      channel,
      seed,
      database,
      /** Output of every process, for a failure message. */
      logs: () => [...nodes.map((n) => n.child.logs()), redis.child.logs(), nginx.errorLog()].join("\n"),
      /** Nodes that exited without being asked to. */
      crashed: () => nodes.filter((n) => !n.child.running && !n.child.expected).map((n) => n.name),
      stop,
    };
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}
