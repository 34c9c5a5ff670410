// Debian's nginx running the repository's deploy/nginx.conf itself (included as it
// is, never a copy), the way compose.yaml runs it: its upstream names the compose
// services (node1:3000, ...), so nginx runs in a private mount namespace whose
// /etc/hosts maps those names to loopback addresses where the test's nodes listen.
// Nothing else on the machine sees that hosts file. Needs root (unshare, mount).

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startChild } from "./children.mjs";
import { E2E_DIR } from "./server.mjs";

export const DEPLOY_NGINX_CONF = path.resolve(E2E_DIR, "../deploy/nginx.conf");

const START_TIMEOUT_MS = 10_000;

/** The nginx binary, or undefined. */
export function nginxBinary() {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin"])) {
    const candidate = path.join(dir, "nginx");
    if (dir && fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** `[host, port]` of each `server host:port;` in deploy/nginx.conf's upstream block. */
export function upstreamServers() {
  const conf = fs.readFileSync(DEPLOY_NGINX_CONF, "utf8");
  const block = conf.split("upstream coursecast {")[1]?.split("}")[0];
  if (!block) throw new Error(`${DEPLOY_NGINX_CONF} has no \`upstream coursecast\` block`);
  return [...block.matchAll(/^\s*server\s+([A-Za-z0-9_.-]+):(\d+)\s*;/gm)].map((m) => [m[1], Number(m[2])]);
}

/** The port of the config's `listen` (the server block says `listen 80;`). */
export function listenPort() {
  const conf = fs.readFileSync(DEPLOY_NGINX_CONF, "utf8");
  const listen = conf.match(/^\s*listen\s+(\d+)\s*;/m);
  if (!listen) throw new Error(`${DEPLOY_NGINX_CONF}: no plain \`listen PORT;\` line`);
  return Number(listen[1]);
}

/** Rejects with a clear message if something already listens on `port` (nginx binds 0.0.0.0). */
export function assertPortFree(port) {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", (err) => {
      reject(new Error(`nginx cannot listen on port ${port} as deploy/nginx.conf says (${err.code}): ` +
        `something else holds it (see \`ss -ltnp 'sport = :${port}'\`)`));
    });
    probe.listen(port, "0.0.0.0", () => probe.close(() => resolve()));
  });
}

/**
 * Starts nginx with deploy/nginx.conf; `hosts` maps each upstream host name to the
 * address its node listens on. Resolves once nginx answers on its port.
 */
export async function startNginx({ workDir, hosts }) {
  const nginx = nginxBinary();
  if (!nginx) throw new Error("nginx is not installed (scripts/check-nginx installs nginx-light)");
  const port = listenPort();
  await assertPortFree(port);

  const dir = path.join(workDir, "nginx");
  fs.mkdirSync(path.join(dir, "logs"), { recursive: true });
  const hostsFile = path.join(dir, "hosts");
  fs.writeFileSync(hostsFile, ["127.0.0.1 localhost", ...Object.entries(hosts).map(([name, ip]) => `${ip} ${name}`), ""].join("\n"));
  // The minimal top level that Debian's /etc/nginx/nginx.conf would otherwise give
  // (as scripts/check-nginx writes it), with everything under this run's directory.
  fs.writeFileSync(path.join(dir, "nginx.conf"), `pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log;
events {}
http {
    access_log off;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${DEPLOY_NGINX_CONF};
}
`);
  const errorLog = () => {
    try {
      return `--- nginx error.log (tail) ---\n${fs.readFileSync(path.join(dir, "logs/error.log"), "utf8").slice(-10_000)}`;
    } catch {
      return "(no nginx error.log)";
    }
  };
  // The config must parse before it runs; nginx -t says why when it does not.
  const nsCommand = (extra) =>
    ["-m", "sh", "-c", `mount --bind "$1" /etc/hosts && exec "$2" -p "$3" -c "$3/nginx.conf" ${extra}`, "sh", hostsFile, nginx, dir];
  try {
    execFileSync("unshare", nsCommand("-t -q"), { stdio: ["ignore", "pipe", "pipe"], timeout: 10_000 });
  } catch (err) {
    throw new Error(`nginx -t refused deploy/nginx.conf: ${err.stderr?.toString() ?? err.message}`);
  }
  // `unshare` and `sh` exec into nginx: the child is nginx's master, which takes its
  // workers down on SIGTERM.
  const child = startChild("nginx", "unshare", nsCommand(`-g "daemon off;"`), { exitSignal: "SIGTERM" });
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!child.running) throw new Error(`nginx exited during start-up\n${child.logs()}\n${errorLog()}`);
    if (await accepts(port)) {
      return { url: `http://127.0.0.1:${port}`, port, child, errorLog, stop: () => child.stop() };
    }
    await sleep(50);
  }
  await child.stop();
  throw new Error(`nginx did not listen on port ${port} within ${START_TIMEOUT_MS} ms\n${errorLog()}`);
}

function accepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
