// Which node nginx sends a client to. deploy/nginx.conf balances with ip_hash, which
// hashes the first three octets of the client's IPv4 address: every client from
// 127.0.0.1 would land on one node. So clients connect from addresses of their own
// /24 (127.0.K.H, all loopback), and the suite learns each subnet's node by asking:
// one request through nginx from that subnet, and the node whose counter moved
// (read from the node itself, not through nginx) is the one.

import http from "node:http";
import { scrape, sumOf } from "./metrics.mjs";

/** Host `host` of subnet `subnet`: 127.0.subnet.host. */
export const sourceAddress = (subnet, host = 1) => `127.0.${subnet}.${host}`;

const PING = { name: "coursecast_http_requests_total", labels: { route: "/api/realtime/ping" } };

async function pings(node) {
  return sumOf(await scrape(node.url), PING.name, PING.labels);
}

/** `POST /api/realtime/ping` through nginx from `localAddress`. */
function pingFrom(url, localAddress) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/api/realtime/ping`, { method: "POST", localAddress, agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`ping from ${localAddress}: ${res.statusCode}`))));
    });
    req.on("timeout", () => req.destroy(new Error(`ping from ${localAddress}: no answer`)));
    req.on("error", reject);
    req.end();
  });
}

/**
 * One subnet per node: Map(node name -> subnet), trying subnets 1, 2, ... until every
 * node has one (or `maxSubnets` are tried: ip_hash spreading nothing is a failure).
 */
export async function subnetPerNode(cluster, maxSubnets = 64) {
  const found = new Map();
  for (let subnet = 1; subnet <= maxSubnets && found.size < cluster.nodes.length; subnet++) {
    const before = await Promise.all(cluster.nodes.map(pings));
    await pingFrom(cluster.url, sourceAddress(subnet));
    const after = await Promise.all(cluster.nodes.map(pings));
    const hit = cluster.nodes.filter((_, i) => after[i] > before[i]);
    if (hit.length !== 1) throw new Error(`one ping from subnet ${subnet} was counted by ${hit.length} nodes`);
    if (!found.has(hit[0].name)) found.set(hit[0].name, subnet);
  }
  if (found.size < cluster.nodes.length) {
    throw new Error(`ip_hash sent ${maxSubnets} subnets to only ${[...found.keys()].join(", ")}`);
  }
  return found;
}
