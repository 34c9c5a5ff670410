// The admin dashboard: signs in, then polls /api/admin/stats every second and
// draws the last two minutes as line charts. Plain JS, no build step. The server
// sends totals (the counters /metrics exports); rates are differences between polls.
"use strict";

const HISTORY = 120;
const NAMESPACES = ["chat", "notifications", "analytics", "collaboration"];
const COLORS = ["#2f6fde", "#1f9d55", "#d97706", "#9333ea"];
const series = { connections: NAMESPACES.map(() => []), rate: [], copies: [], p50: [], p99: [], refusals: [], misses: [] };
let token = sessionStorage.getItem("coursecast-admin-token");
// Totals of the previous poll, by name, and when it was taken.
let previous = null;

const $ = (id) => document.getElementById(id);

function push(list, value) {
  list.push(value);
  if (list.length > HISTORY) list.shift();
}

function draw(canvas, lines) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio;
  const height = canvas.clientHeight * ratio;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(1, ...lines.flatMap((l) => l.values));
  ctx.strokeStyle = "#e3e7ef";
  ctx.beginPath();
  ctx.moveTo(0, height - 0.5);
  ctx.lineTo(width, height - 0.5);
  ctx.stroke();
  ctx.fillStyle = "#8a93a8";
  ctx.font = `${11 * ratio}px system-ui`;
  ctx.fillText(String(Math.round(max * 100) / 100), 4, 12 * ratio);
  for (const line of lines) {
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2 * ratio;
    ctx.beginPath();
    // The newest sample sits at the right edge; history grows leftwards.
    const offset = HISTORY - line.values.length;
    line.values.forEach((v, i) => {
      const x = ((offset + i) / (HISTORY - 1)) * width;
      const y = height - (v / max) * (height - 16 * ratio);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function rows(table, entries, head) {
  const line = (cells, tag) => {
    const tr = document.createElement("tr");
    cells.forEach((value, i) => {
      const cell = document.createElement(tag);
      if (value && typeof value === "object") {
        cell.textContent = value.text;
        if (value.className) cell.className = value.className;
        if (value.color) cell.style.color = value.color;
      } else {
        cell.textContent = value;
      }
      tr.append(cell);
    });
    return tr;
  };
  table.replaceChildren(...(head ? [line(head, "th")] : []), ...entries.map((cells) => line(cells, "td")));
}

const sum = (object) => Object.values(object ?? {}).reduce((a, b) => a + b, 0);
const fixed = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");
const shortId = (id) => `${id.slice(0, 8)}…`;

/** Per-second rates of the totals in `now` since the previous poll (0 on the first). */
function rates(now, seconds) {
  const out = {};
  for (const [name, value] of Object.entries(now)) {
    const before = previous?.totals[name];
    out[name] = before === undefined || seconds <= 0 ? 0 : Math.max(0, value - before) / seconds;
  }
  return out;
}

/** The mean round trip over the last interval, ms (over all time before a second poll). */
function meanMs(name, histogram, totals) {
  const count = histogram.count - (previous?.totals[`${name}.count`] ?? 0);
  const seconds = histogram.secondsSum - (previous?.totals[`${name}.sum`] ?? 0);
  totals[`${name}.count`] = histogram.count;
  totals[`${name}.sum`] = histogram.secondsSum;
  return count > 0 ? (seconds * 1000) / count : NaN;
}

function dependencyState(up) {
  return up ? { text: "up", className: "up" } : { text: "DOWN", className: "down" };
}

async function tick() {
  if (!token) return;
  const res = await fetch("/api/admin/stats", { headers: { Authorization: `Bearer ${token}` } });
  if (res.status === 401 || res.status === 403) {
    signOut((await res.json()).error.message);
    return;
  }
  const stats = await res.json();
  const now = performance.now();
  const seconds = previous ? (now - previous.at) / 1000 : 0;
  const totals = {
    events: stats.eventsDelivered,
    socketCopies: stats.deliveries.socket ?? 0,
    pollCopies: stats.deliveries.long_poll ?? 0,
    sseCopies: stats.deliveries.sse ?? 0,
    misses: stats.slowConsumers.broadcastMisses,
    deferred: stats.slowConsumers.answersDeferred,
    lost: stats.slowConsumers.answersLost,
    relayDropped: stats.dependencies.redis.relayDropped,
    refusals: sum(stats.refusals),
  };
  for (const [code, count] of Object.entries(stats.refusals)) totals[`refusal.${code}`] = count;
  for (const room of stats.rooms.byTraffic) totals[`room.${room.namespace}.${room.courseId}`] = room.events;
  const rate = rates(totals, seconds);
  const copies = rate.socketCopies + rate.pollCopies + rate.sseCopies;
  const dbMs = meanMs("db", stats.dependencies.database.queries, totals);
  const redisMs = meanMs("redis", stats.dependencies.redis.roundTrips, totals);
  previous = { totals, at: now };

  NAMESPACES.forEach((ns, i) => push(series.connections[i], stats.connections.byNamespace[ns] ?? 0));
  push(series.rate, rate.events);
  push(series.copies, copies);
  push(series.p50, stats.latency.p50Ms);
  push(series.p99, stats.latency.p99Ms);
  push(series.refusals, rate.refusals);
  push(series.misses, rate.misses);

  $("status").textContent = `live · ${new Date(stats.serverTime).toLocaleTimeString()}`;
  // 20 events/s to rooms of 200 is 20 events and 4,000 copies a second.
  $("rate").innerHTML = "";
  $("rate").append(
    `${fixed(rate.events)} `,
    Object.assign(document.createElement("small"), { textContent: "events → " }),
    `${fixed(copies, 0)} `,
    Object.assign(document.createElement("small"), { textContent: "copies" }),
  );
  rows($("deliveries"), [
    [{ text: "events (stored, fanned out once each)", color: "#2f6fde" }, `${fixed(rate.events)}/s`, stats.eventsDelivered],
    [{ text: "copies to sockets", color: "#9333ea" }, `${fixed(rate.socketCopies, 0)}/s`, totals.socketCopies],
    ["copies to long polls", `${fixed(rate.pollCopies, 0)}/s`, totals.pollCopies],
    ["copies to event streams (SSE)", `${fixed(rate.sseCopies, 0)}/s`, totals.sseCopies],
    ["copies per event", rate.events > 0 ? fixed(copies / rate.events) : "–", ""],
  ], ["", "now", "total"]);

  const db = stats.dependencies.database;
  const redis = stats.dependencies.redis;
  rows($("dependencies"), [
    ["database", dependencyState(db.up), `${fixed(dbMs, 2)} ms mean query`, `${db.outages} outages`],
    redis.configured
      ? ["redis", dependencyState(redis.up), `${fixed(redisMs, 2)} ms mean round trip`, `${redis.relayDropped} not relayed`]
      : ["redis", "not configured (one node)", "", ""],
  ]);

  $("refusal-rate").textContent = fixed(rate.refusals);
  rows(
    $("refusals"),
    Object.entries(stats.refusals)
      .sort((a, b) => b[1] - a[1])
      .map(([code, count]) => [code, `${fixed(rate[`refusal.${code}`])}/s`, count]),
    ["code", "now", "total"],
  );

  $("misses").textContent = `${fixed(rate.misses)}/s`;
  rows($("slow"), [
    ["live copies missed (full buffer; repaired from storage)", totals.misses],
    ["answers that waited for a full buffer", totals.deferred],
    ["answers lost with their socket", totals.lost],
  ]);

  const room = (r) => [`${r.namespace} ${shortId(r.courseId)}`, r.members, r.sockets, r.events];
  rows($("rooms-members"), stats.rooms.byMembers.map(room), ["course room", "users", "sockets", "events"]);
  rows(
    $("rooms-traffic"),
    stats.rooms.byTraffic.map((r) => [...room(r).slice(0, 2), `${fixed(rate[`room.${r.namespace}.${r.courseId}`])}/s`, r.events]),
    ["course room", "users", "now", "events"],
  );
  $("latency").textContent = `p50 ${stats.latency.p50Ms.toFixed(2)} · p99 ${stats.latency.p99Ms.toFixed(2)}`;
  rows($("namespaces"), NAMESPACES.map((ns, i) => [{ text: `/${ns}`, color: COLORS[i] }, stats.connections.byNamespace[ns] ?? 0]));
  rows($("server"), [
    ["clients (Engine.IO sessions)", stats.connections.clients],
    ["sockets", stats.connections.sockets],
    ["long-poll waiters", stats.longPollWaiters],
    ["latency samples", stats.latency.samples],
    ["uptime", `${stats.uptimeSeconds} s`],
  ]);
  draw($("connections-chart"), NAMESPACES.map((_, i) => ({ values: series.connections[i], color: COLORS[i] })));
  draw($("rate-chart"), [
    { values: series.rate, color: "#2f6fde" },
    { values: series.copies, color: "#9333ea" },
  ]);
  draw($("refusals-chart"), [{ values: series.refusals, color: "#d97706" }]);
  draw($("misses-chart"), [{ values: series.misses, color: "#b3261e" }]);
  draw($("latency-chart"), [
    { values: series.p50, color: "#1f9d55" },
    { values: series.p99, color: "#b3261e" },
  ]);
}

function showPanels(signedIn) {
  $("login").classList.toggle("hidden", signedIn);
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("hidden", !signedIn));
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem("coursecast-admin-token");
  showPanels(false);
  $("status").textContent = "signed out";
  $("error").textContent = message || "";
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const res = await fetch("/api/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  const body = await res.json();
  if (!res.ok) return signOut(body.error.message);
  if (body.user.role !== "ADMIN") return signOut("this account is not an ADMIN");
  token = body.token;
  sessionStorage.setItem("coursecast-admin-token", token);
  $("error").textContent = "";
  showPanels(true);
  tick();
});

showPanels(Boolean(token));
setInterval(() => tick().catch((e) => ($("status").textContent = `error: ${e.message}`)), 1000);
tick();
