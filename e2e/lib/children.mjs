// Child processes of a test file (servers, nginx, redis-server) that never outlive
// it: each keeps the tail of its output for error messages, and whatever is still
// running when the test process exits, or is interrupted, is killed.
//
//   const redis = startChild("redis", "redis-server", ["--port", "6400"]);
//   await redis.stop();             // SIGTERM, then SIGKILL past the deadline
//   redis.kill("SIGKILL");          // an exit the test asked for, not a crash

import { spawn } from "node:child_process";

const LOG_TAIL_CHARS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

const live = new Set();

// nginx's master must hear SIGTERM to take its workers down with it; a SIGKILL would
// leave them running. Everything else is killed outright.
function killNow(child) {
  child.proc.kill(child.exitSignal);
}

process.once("exit", () => {
  for (const child of live) killNow(child);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    for (const child of live) killNow(child);
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  });
}

/**
 * Spawns `command args` (no shell). Options: `env`, `cwd`, `exitSignal` (what kills it
 * when the test process ends; default SIGKILL), `echo` (stream its output to stderr).
 */
export function startChild(name, command, args, { env, cwd, exitSignal = "SIGKILL", echo = false } = {}) {
  const proc = spawn(command, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
  let tail = "";
  const record = (chunk) => {
    tail = (tail + chunk.toString()).slice(-LOG_TAIL_CHARS);
    if (echo) process.stderr.write(chunk);
  };
  proc.stdout.on("data", record);
  proc.stderr.on("data", record);

  const child = {
    name,
    proc,
    exitSignal,
    /** Set when the test stopped or killed it on purpose. */
    expected: false,
    /** Resolves with {code, signal} when it has exited. */
    exited: new Promise((resolve) => {
      proc.once("exit", (code, signal) => {
        live.delete(child);
        resolve({ code, signal });
      });
      proc.once("error", (err) => {
        live.delete(child);
        record(`spawn failed: ${err.message}\n`);
        resolve({ code: null, signal: null, error: err });
      });
    }),
    get running() {
      return proc.exitCode === null && proc.signalCode === null && live.has(child);
    },
    logs() {
      return tail ? `--- ${name} output (tail) ---\n${tail}` : `(no output from ${name})`;
    },
    /** Sends `signal` now; the exit counts as intended. */
    kill(signal) {
      child.expected = true;
      proc.kill(signal);
    },
    /** SIGTERM and wait; SIGKILL (and an error) if it does not exit within the deadline. */
    async stop(timeoutMs = STOP_TIMEOUT_MS) {
      if (!child.running) return;
      child.kill("SIGTERM");
      let timer;
      const late = new Promise((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      });
      const tooLate = await Promise.race([child.exited.then(() => false), late]);
      clearTimeout(timer);
      if (tooLate) {
        proc.kill("SIGKILL");
        await child.exited;
        throw new Error(`${name} did not exit within ${timeoutMs} ms of SIGTERM (killed)\n${child.logs()}`);
      }
    },
  };
  live.add(child);
  return child;
}
