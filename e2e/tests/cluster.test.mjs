// Several nodes that act as one, tested as deployed (docs/OPERATIONS.md, "Several
// nodes" and "TLS, reverse proxy, sticky sessions"): three coursecast processes on one
// PostgreSQL database and a Redis bus, behind nginx running deploy/nginx.conf itself,
// driven by the official socket.io-client through nginx, some clients WebSocket-only
// and some polling-only, spread over the nodes by their source addresses.
//
//   (a) a message sent via one node reaches the subscribers on every node, live, and
//       every client counts the course's users on all nodes online (presence);
//   (c) Redis restarted mid-stream: sends keep their acks and their latency, and every
//       receiver repairs what the bus dropped from its cursor;
//   (b) a node SIGKILLed mid-stream: its clients reconnect through nginx to another
//       node, and every receiver repairs from its cursor.
// After each phase every receiver holds every acknowledged message exactly once, in
// seq order without gaps. ((c) runs before (b), so the Redis phase has all three nodes.)
//
// Needs nginx, root (nginx runs in a mount namespace of its own), redis-server and
// PostgreSQL: without them it is skipped loudly, or fails under CI=true.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { Sockets, ackOk, connectError, createCourse } from "../lib/client.mjs";
import { SOCKET_CONNECTS_PER_SECOND_PER_IP, missingPrerequisites, startCluster } from "../lib/cluster.mjs";
import { Follower, Sender, now, percentile } from "../lib/course-stream.mjs";
import { scrape, sumOf } from "../lib/metrics.mjs";
import { sourceAddress, subnetPerNode } from "../lib/placement.mjs";

/** Clients per node: half WebSocket-only, half polling-only. */
const CLIENTS_PER_NODE = 6;
/** One sender per node; three of them make about 20 messages a second. */
const SENDS_PER_SECOND = 7;
const PHASE_TIMEOUT_MS = 60_000;

const missing = missingPrerequisites();
const skip = missing.length > 0 && process.env.CI !== "true";
if (skip) {
  process.stderr.write(`\n${[
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "!! SKIPPED: the three-node suite behind nginx (tests/cluster.test.mjs). Missing:",
    ...missing.map((m) => `!!   - ${m}`),
    "!! Under CI=true this fails instead.",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
  ].join("\n")}\n\n`);
}

/** Resolves once `check()` holds; rejects with `what` after `ms`. */
async function waitUntil(what, check, ms) {
  const deadline = now() + ms;
  while (now() < deadline) {
    if (await check()) return now();
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms waiting until ${what}`);
}

const round = (ms) => (Number.isNaN(ms) ? "-" : `${Math.round(ms)}`);

describe("three coursecast nodes behind nginx (deploy/nginx.conf)", { skip: skip && `missing: ${missing.join("; ")}` }, () => {
  let cluster;
  /** Every client, each following the phase's course: {follower, node, user}. */
  const clients = [];
  const followers = () => clients.map((c) => c.follower);
  let senders = [];
  /** Map(node name -> the subnet ip_hash sends to it). */
  let subnets;

  before(async () => {
    if (missing.length) throw new Error(`CI=true and the cluster suite cannot run; missing: ${missing.join("; ")}`);
    cluster = await startCluster({ students: CLIENTS_PER_NODE * 3 });
    assert.equal(cluster.nodes.length, 3, "deploy/nginx.conf's upstream lists three nodes");
    subnets = await subnetPerNode(cluster);
    let u = 0;
    for (const node of cluster.nodes) {
      for (let host = 1; host <= CLIENTS_PER_NODE; host++) {
        const transports = host % 2 ? ["websocket"] : ["polling"];
        const user = cluster.seed.users[u++];
        const follower = new Follower({
          url: cluster.url,
          name: `${node.name}-${transports[0]}-${host}`,
          token: user.token,
          transports,
          localAddress: sourceAddress(subnets.get(node.name), host),
        });
        clients.push({ follower, node, user });
      }
    }
    await Promise.all(followers().map((f) => f.connected()));
    // A sender on every node; node2's is a polling client, the others WebSocket ones.
    senders = cluster.nodes.map((node, i) => {
      const transport = i === 1 ? "polling" : "websocket";
      const { follower } = clients.find((c) => c.node === node && c.follower.transport === transport);
      return new Sender(follower, { perSecond: SENDS_PER_SECOND });
    });
  });

  after(async () => {
    for (const f of followers()) f.close();
    await cluster?.stop();
  });

  /**
   * A phase: a fresh course everyone follows from its start, the senders sending
   * while `disturb()` runs, then the senders stopped (every message answered).
   */
  async function phase(tag, disturb) {
    const courseId = await createCourse(cluster, `cluster phase ${tag}`, clients.map((c) => c.user));
    await Promise.all(followers().map((f) => f.follow(courseId)));
    for (const sender of senders) sender.start(courseId, tag);
    let marks;
    try {
      marks = await disturb();
    } finally {
      // Also when disturb() failed: no sender may outlive the phase.
      await Promise.allSettled(senders.map((s) => s.stop()));
    }
    await Promise.all(senders.map((s) => s.loop));
    return { marks, messages: senders.flatMap((s) => s.messages) };
  }

  /**
   * After a final `join {since: cursor}` of every receiver: each holds every
   * acknowledged message exactly once, in seq order without gaps, and all hold the
   * same stream. Returns figures for the summary line.
   */
  async function assertExactlyOnce(tag, messages) {
    const unanswered = messages.filter((m) => !m.event);
    assert.deepEqual(unanswered.map((m) => m.clientMsgId), [], "every send was answered");
    await Promise.all(followers().map((f) => f.repair()));
    const head = Math.max(...messages.map((m) => m.event.seq));
    const reference = followers()[0].events().map((e) => e.event.messageId);
    for (const f of followers()) {
      const { stream } = f;
      const events = f.events();
      assert.deepEqual(stream.conflicts, [], `${f.name}: one event per seq`);
      assert.deepEqual(events.map((e) => e.event.seq), events.map((_, i) => i + 1), `${f.name}: seqs 1..n, no gap`);
      assert.equal(events.length, head, `${f.name}: the stream ends at the last acknowledged seq`);
      const ids = events.map((e) => e.event.messageId);
      assert.equal(new Set(ids).size, ids.length, `${f.name}: no message twice`);
      const contents = events.map((e) => e.event.content);
      assert.equal(new Set(contents).size, contents.length, `${f.name}: no clientMsgId stored twice`);
      for (const m of messages) {
        assert.equal(stream.bySeq.get(m.event.seq)?.event.messageId, m.event.messageId,
          `${f.name}: acknowledged ${m.clientMsgId} (seq ${m.event.seq}) is there`);
      }
      assert.deepEqual(ids, reference, `${f.name} holds the same stream as ${followers()[0].name}`);
    }
    assert.equal(head, messages.length, "one stored event per message sent, retries included");
    const received = followers().map((f) => f.events().length);
    const live = followers().map((f) => f.events().filter((e) => e.live).length);
    const total = (count) => followers().reduce((sum, f) => sum + count(f), 0);
    return `[${tag}] ${messages.length} acked, ${messages.filter((m) => m.attempts.length > 1).length} needed a retry; ` +
      `received per receiver ${Math.min(...received)}..${Math.max(...received)} ` +
      `(live ${Math.min(...live)}..${Math.max(...live)}, the rest repaired from the cursor); ` +
      `${total((f) => f.stream.repairs)} joins with since (${total((f) => f.repairErrors)} cut by a lost connection), ` +
      `${total((f) => f.stream.overlaps)} copies seen twice and dropped`;
  }

  /** Every receiver got these messages live (not only by repair). */
  function assertLive(messages, why) {
    assert.ok(messages.length > 0, `some messages to check: ${why}`);
    for (const f of followers()) {
      const missed = messages.filter((m) => !f.stream.bySeq.get(m.event.seq)?.live);
      assert.deepEqual(missed.map((m) => m.clientMsgId), [], `${f.name} got them live: ${why}`);
    }
  }

  /** First-attempt ack latencies (ms) of the messages first sent in [from, to). */
  function ackLatencies(messages, from, to) {
    return messages.filter((m) => m.attempts[0].at >= from && m.attempts[0].at < to).map((m) => m.attempts[0].ms);
  }

  async function chatSockets(node) {
    return sumOf(await scrape(node.url), "coursecast_socket_connections", { namespace: "/chat" });
  }

  test("ip_hash spreads the clients over all three nodes and keeps a polling session on its node", async () => {
    for (const node of cluster.nodes) {
      assert.equal(await chatSockets(node), CLIENTS_PER_NODE, `${node.name} holds the clients of its subnet`);
    }
    // Every poll and every packet of a polling client is its own HTTP request through
    // nginx; they all have to reach the node that holds the Engine.IO session.
    const { follower, node: home } = clients.find((c) => c.follower.transport === "polling");
    const sid = follower.socket.io.engine.id;
    const presence = async (node) =>
      sumOf(await scrape(node.url), "coursecast_socket_events_received_total", { namespace: "/chat", event: "presence" });
    const before = await Promise.all(cluster.nodes.map(presence));
    for (let i = 0; i < 10; i++) await ackOk(follower.socket, "presence", { courseId: cluster.seed.courseId });
    const after = await Promise.all(cluster.nodes.map(presence));
    assert.deepEqual(after.map((n, i) => n - before[i]), cluster.nodes.map((n) => (n === home ? 10 : 0)),
      "all ten requests reached the session's node");
    assert.equal(follower.socket.io.engine.id, sid, "one Engine.IO session throughout");
    assert.equal(follower.socket.io.engine.transport.name, "polling");
    assert.equal(follower.outages.length, 0);
    // Why stickiness is needed: any other node does not know the session.
    const other = cluster.nodes.find((n) => n !== home);
    const res = await fetch(`${other.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    assert.equal(res.status, 400, `${other.name} refuses a poll of ${home.name}'s session`);
  });

  test("per-address limits count each client behind nginx, not nginx", async (t) => {
    // Two addresses of one subnet: ip_hash sends both to the same node.
    const subnet = subnets.get(cluster.nodes[0].name);
    const sockets = new Sockets(cluster.url);
    t.after(() => sockets.closeAll());
    // Without a token every handshake is refused: RATE_LIMITED once the address's
    // budget is spent (checked first), TOKEN_MISSING before that.
    const refusal = (host) => {
      const agent = new http.Agent({ localAddress: sourceAddress(subnet, host) });
      return connectError(sockets.open("/chat", { agent })).then((err) => err.message);
    };
    const burst = SOCKET_CONNECTS_PER_SECOND_PER_IP * 2;
    const outcomes = await Promise.all(Array.from({ length: burst + 5 }, () => refusal(200)));
    assert.ok(outcomes.includes("RATE_LIMITED"), `a burst above ${burst} from one address is refused: ${outcomes}`);
    assert.equal(await refusal(201), "TOKEN_MISSING", "another address behind the same nginx is not");
  });

  test("(a) a message sent via any node reaches the subscribers on all three nodes", { timeout: PHASE_TIMEOUT_MS }, async (t) => {
    const { messages } = await phase("a", () => sleep(3000));
    for (const sender of senders) assert.ok(sender.messages.length > 0, `${sender.follower.name} sent via its node`);
    const summary = await assertExactlyOnce("a", messages);
    assertLive(messages, "no failure: every event is relayed live to every node");
    const ms = messages.map((m) => m.attempts[0].ms);
    t.diagnostic(`${summary}; ack ms p50 ${round(percentile(ms, 50))} p99 ${round(percentile(ms, 99))}`);
  });

  test("presence is the course's across nodes: every client counts every node's users online", { timeout: PHASE_TIMEOUT_MS }, async () => {
    // After (a) every client is in (a)'s course room, on its own node.
    const courseId = followers()[0].stream.courseId;
    const counts = async () => Promise.all(followers().map(async (f) => (await ackOk(f.socket, "presence", { courseId })).count));
    await waitUntil(`every client counts ${clients.length} online`,
      async () => (await counts()).every((count) => count === clients.length), 10_000);
  });

  test("(c) Redis restarted mid-stream: no stall, then every receiver repairs exactly once", { timeout: PHASE_TIMEOUT_MS }, async (t) => {
    const dropped = async () => {
      const all = await Promise.all(cluster.nodes.map(async (n) =>
        sumOf(await scrape(n.url), "coursecast_cluster_relay_dropped_total", { reason: "redis_down" })));
      return all.reduce((a, b) => a + b, 0);
    };
    const droppedBefore = await dropped();
    const { messages, marks } = await phase("c", async () => {
      await sleep(1500);
      const downAt = now();
      await cluster.redis.restart(2000);
      const restartedAt = now();
      // Back means: every node publishes again and every node has resubscribed.
      const upAt = await waitUntil("every node relays over Redis again", async () => {
        const up = await Promise.all(cluster.nodes.map(async (n) =>
          sumOf(await scrape(n.url), "coursecast_dependency_up", { dependency: "redis" })));
        return up.every((v) => v === 1) && Number(cluster.redis.subscribers(cluster.channel)) === cluster.nodes.length;
      }, 15_000);
      await sleep(2500);
      return { downAt, restartedAt, upAt };
    });
    const summary = await assertExactlyOnce("c", messages);
    const relayDropped = (await dropped()) - droppedBefore;
    assert.ok(relayDropped > 0, "the outage hit the relay (events were dropped, and repaired from storage)");

    // No stall: Redis is not on the write path.
    const retried = messages.filter((m) => m.attempts.length > 1);
    assert.deepEqual(retried.map((m) => [m.clientMsgId, m.attempts]), [], "every send answered at its first attempt");
    const before = ackLatencies(messages, -Infinity, marks.downAt);
    const during = ackLatencies(messages, marks.downAt, marks.upAt);
    const afterUp = ackLatencies(messages, marks.upAt, Infinity);
    assert.ok(during.length >= 20, `sends during the outage: ${during.length}`);
    assert.ok(percentile(during, 99) < 1000, `ack p99 during the Redis outage ${round(percentile(during, 99))} ms < 1 s`);
    // Once every node relays again, events reach every node live again.
    assertLive(messages.filter((m) => m.attempts[0].at >= marks.upAt), "sent after Redis came back");

    const figures = (ms) => `p50 ${round(percentile(ms, 50))} p99 ${round(percentile(ms, 99))} max ${round(Math.max(...ms))} (n=${ms.length})`;
    t.diagnostic(summary);
    t.diagnostic(`[c] Redis down ${round(marks.restartedAt - marks.downAt)} ms, relaying on every node again ` +
      `${round(marks.upAt - marks.restartedAt)} ms after its restart; ${relayDropped} relays dropped`);
    t.diagnostic(`[c] ack ms before: ${figures(before)} | during outage: ${figures(during)} | after: ${figures(afterUp)}`);
  });

  test("(b) a node SIGKILLed mid-stream: its clients reconnect via nginx and every receiver repairs exactly once", { timeout: PHASE_TIMEOUT_MS }, async (t) => {
    // The node of the polling sender: its clients are WebSocket and polling ones, and
    // one of them is sending when it dies.
    const victim = cluster.nodes[1];
    const victimSender = senders.find((s) => clients.find((c) => c.follower === s.follower).node === victim);
    const orphans = clients.filter((c) => c.node === victim).map((c) => c.follower);
    const survivors = clients.filter((c) => c.node !== victim).map((c) => c.follower);
    const outagesBefore = new Map(followers().map((f) => [f, f.outages.length]));
    const { messages, marks } = await phase("b", async () => {
      await sleep(1500);
      // Mid-send if it can be: that send's ack is lost with the node, and the sender
      // retries it with the same clientMsgId on the node it reconnects to.
      await waitUntil("a send in flight on the victim", () => victimSender.inFlight(), 2000).catch(() => {});
      const midSend = victimSender.inFlight();
      const killedAt = now();
      victim.child.kill("SIGKILL");
      const recoveredAt = await waitUntil(`${victim.name}'s clients reconnected and repaired`, () =>
        orphans.every((f) => f.outages.slice(outagesBefore.get(f)).some((o) => o.repairedAt)), 20_000);
      await sleep(2500);
      return { killedAt, recoveredAt, midSend };
    });
    const summary = await assertExactlyOnce("b", messages);

    for (const f of survivors) assert.equal(f.outages.length, outagesBefore.get(f), `${f.name} kept its connection`);
    // ip_hash passes over the dead node the same way for every request of an address,
    // so a polling client that moved stays on its new node.
    for (const f of orphans) assert.equal(f.outages.length, outagesBefore.get(f) + 1, `${f.name} reconnected once, and stayed`);
    const reconnected = orphans.map((f) => f.outages.slice(outagesBefore.get(f)).find((o) => o.repairedAt));
    const living = cluster.nodes.filter((n) => n !== victim);
    const sockets = (await Promise.all(living.map(chatSockets))).reduce((a, b) => a + b, 0);
    assert.equal(sockets, clients.length, `the two living nodes hold every client`);
    assertLive(messages.filter((m) => m.attempts[0].at >= marks.recoveredAt), "sent after everyone reconnected");

    const connectMs = reconnected.map((o) => o.connectedAt - marks.killedAt);
    const repairMs = reconnected.map((o) => o.repairedAt - marks.killedAt);
    const latency = messages.map((m) => m.attempts[0].ms).filter((ms) => ms !== undefined);
    t.diagnostic(summary);
    t.diagnostic(`[b] ${victim.name} killed ${marks.midSend ? "with" : "without"} a send in flight; its ${orphans.length} clients (${orphans.map((f) => f.transport).join(", ")}) ` +
      `reconnected after ms p50 ${round(percentile(connectMs, 50))} max ${round(Math.max(...connectMs))}, ` +
      `repaired after ms p50 ${round(percentile(repairMs, 50))} max ${round(Math.max(...repairMs))}; ` +
      `reasons: ${[...new Set(reconnected.map((o) => o.reason))].join(", ")}`);
    t.diagnostic(`[b] ack ms p50 ${round(percentile(latency, 50))} p99 ${round(percentile(latency, 99))}; ` +
      `${messages.filter((m) => m.attempts.length > 1).length} sends retried with their clientMsgId`);
  });

  test("no node crashed (only the one the test killed is down)", () => {
    assert.deepEqual(cluster.crashed(), [], cluster.logs());
  });
});
