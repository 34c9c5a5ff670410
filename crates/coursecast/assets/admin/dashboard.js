// The admin dashboard: signs in, then polls /api/admin/stats every second and
// draws the last two minutes as line charts. Plain JS, no build step.
"use strict";

const HISTORY = 120;
const NAMESPACES = ["chat", "notifications", "analytics", "collaboration"];
const COLORS = ["#2f6fde", "#1f9d55", "#d97706", "#9333ea"];
const series = { connections: NAMESPACES.map(() => []), rate: [], p50: [], p99: [] };
let token = sessionStorage.getItem("coursecast-admin-token");
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

function rows(table, entries) {
  table.replaceChildren(
    ...entries.map(([name, value, color]) => {
      const tr = document.createElement("tr");
      const label = document.createElement("td");
      label.textContent = name;
      if (color) label.style.color = color;
      const cell = document.createElement("td");
      cell.textContent = value;
      tr.append(label, cell);
      return tr;
    }),
  );
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
  const rate = previous ? ((stats.eventsDelivered - previous.delivered) * 1000) / (now - previous.at) : 0;
  previous = { delivered: stats.eventsDelivered, at: now };

  NAMESPACES.forEach((ns, i) => push(series.connections[i], stats.connections.byNamespace[ns] ?? 0));
  push(series.rate, rate);
  push(series.p50, stats.latency.p50Ms);
  push(series.p99, stats.latency.p99Ms);

  $("status").textContent = `live · ${new Date(stats.serverTime).toLocaleTimeString()}`;
  $("rate").textContent = rate.toFixed(1);
  $("latency").textContent = `p50 ${stats.latency.p50Ms.toFixed(2)} · p99 ${stats.latency.p99Ms.toFixed(2)}`;
  rows($("namespaces"), NAMESPACES.map((ns, i) => [`/${ns}`, stats.connections.byNamespace[ns] ?? 0, COLORS[i]]));
  rows($("server"), [
    ["clients (Engine.IO sessions)", stats.connections.clients],
    ["sockets", stats.connections.sockets],
    ["long-poll waiters", stats.longPollWaiters],
    ["events delivered", stats.eventsDelivered],
    ["latency samples", stats.latency.samples],
    ["uptime", `${stats.uptimeSeconds} s`],
  ]);
  draw($("connections-chart"), NAMESPACES.map((_, i) => ({ values: series.connections[i], color: COLORS[i] })));
  draw($("rate-chart"), [{ values: series.rate, color: "#2f6fde" }]);
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
