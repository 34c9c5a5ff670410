// The demo page: sign in, then course chat (presence, typing), notifications, an
// analysis progress bar and the connection status, all through @coursecast/client.
import {
  type CoursecastClient,
  type MessageEvent,
  type Mode,
  type NotificationEvent,
  type ProgressEvent,
  type Status,
  createClient,
} from "../dist/index.js";

interface User {
  id: string;
  email: string;
  displayName: string;
  role: string;
}
interface Course {
  id: string;
  title: string;
}

const $ = <T extends HTMLElement = HTMLElement>(selector: string) => document.querySelector(selector) as T;
const el = <K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = "") => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
};

let token = "";
let credentials: { email: string; password: string } | null = null;
let client: CoursecastClient;
let me: User;
let courseId = "";
const names = new Map<string, string>();
const online = new Set<string>();
const typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
let lastTyping = 0;
let analysisId = "";

/** JSON calls to the platform API (same origin as the page). */
async function call<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (auth) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(answer?.error?.message ?? `HTTP ${res.status}`);
  return answer as T;
}

async function login(email: string, password: string): Promise<{ user: User; token: string }> {
  return call("POST", "/api/auth/login", { email, password }, false);
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target as HTMLFormElement);
  const email = String(form.get("email"));
  const password = String(form.get("password"));
  try {
    const answer = await login(email, password);
    credentials = { email, password };
    token = answer.token;
    await start(answer.user);
  } catch (err) {
    $("#login-error").textContent = (err as Error).message;
  }
});

$("#token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  token = String(new FormData(event.target as HTMLFormElement).get("token")).trim();
  try {
    const { user } = await call<{ user: User }>("GET", "/api/auth/me");
    await start(user);
  } catch (err) {
    $("#login-error").textContent = (err as Error).message;
  }
});

async function start(user: User): Promise<void> {
  me = user;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#whoami").textContent = `${user.displayName} · ${user.role.toLowerCase()}`;
  let first = true;
  client = createClient({
    // The first call gets the token we signed in with; later ones (expired token,
    // session:expiring) sign in again when we know the password.
    getToken: async () => {
      if (!first && credentials) token = (await login(credentials.email, credentials.password)).token;
      first = false;
      return token;
    },
    fallback: { probeIntervalMs: 5000 },
  });
  (window as unknown as { coursecast: CoursecastClient }).coursecast = client;
  showStatus(client.status);
  client.on("status", showStatus);
  client.on("error", (err, fatal) => {
    $("#app-error").textContent = fatal ? `Disconnected: ${err.code}` : `${err.code}: ${err.message}`;
  });
  client.chat.on("message", onMessage);
  client.chat.on("roster", (r) => {
    if (r.courseId !== courseId) return;
    online.clear();
    for (const id of r.online) online.add(id);
    renderPresence();
  });
  client.chat.on("presence", (p) => {
    if (p.courseId !== courseId) return;
    // Rooms of more than 200 send counts only, and their join lists nobody: this
    // demo lists the users of small rooms.
    for (const id of p.online ?? []) online.add(id);
    for (const id of p.offline ?? []) online.delete(id);
    renderPresence();
  });
  client.chat.on("typing", (t) => t.courseId === courseId && showTyping(t.userId));
  client.notifications.on("notification", onNotification);
  client.analytics.on("progress", onProgress);
  setInterval(() => {
    $("#pending").textContent = String(client.pendingWrites);
  }, 500);

  const { courses } = await call<{ courses: Course[] }>("GET", "/api/courses");
  const select = $<HTMLSelectElement>("#course");
  for (const course of courses) select.append(new Option(course.title, course.id));
  select.addEventListener("change", () => void openCourse(select.value));
  if (courses.length > 0) await openCourse(courses[0].id);
  else $("#app-error").textContent = "You are not enrolled in any course.";
}

async function openCourse(id: string): Promise<void> {
  if (courseId) await client.chat.leave(courseId).catch(() => {});
  courseId = id;
  $("#messages").replaceChildren();
  online.clear();
  renderPresence();
  try {
    const { members } = await call<{ members: { userId: string; displayName: string }[] }>(
      "GET",
      `/api/courses/${id}/members`,
    );
    for (const m of members) names.set(m.userId, m.displayName);
  } catch {
    // names fall back to short ids
  }
  await client.chat.join(id, { since: 0 }); // the whole history, then live
}

const nameOf = (userId: string) => (userId === me.id ? "You" : (names.get(userId) ?? userId.slice(0, 8)));

function onMessage(m: MessageEvent): void {
  if (m.courseId !== courseId) return;
  const list = $("#messages");
  if (m.type === "message_sent") {
    const li = el("li", m.senderId === me.id ? "mine" : "");
    li.dataset.messageId = m.messageId;
    const who = el("div", "who", nameOf(m.senderId));
    who.append(el("span", "when", new Date(m.timestamp).toLocaleTimeString()));
    li.append(who, el("div", "text", m.content ?? ""));
    list.append(li);
    list.scrollTop = list.scrollHeight;
    clearTyping(m.senderId);
    return;
  }
  const li = list.querySelector<HTMLElement>(`li[data-message-id="${m.messageId}"]`);
  const text = li?.querySelector(".text");
  if (!li || !text) return;
  if (m.type === "message_edited") text.textContent = `${m.content ?? ""} (edited)`;
  else {
    li.classList.add("deleted");
    text.textContent = "message deleted";
  }
}

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("#message");
  const content = input.value.trim();
  if (!content || !courseId) return;
  input.value = "";
  client.chat.send(courseId, content).catch((err) => {
    $("#app-error").textContent = `Not sent: ${err.code}`;
  });
});

$("#message").addEventListener("input", () => {
  if (!courseId || Date.now() - lastTyping < 2000) return;
  lastTyping = Date.now();
  client.chat.typing(courseId).catch(() => {});
});

function renderPresence(): void {
  const list = $("#presence");
  list.replaceChildren(...[...online].map((id) => el("li", "", nameOf(id))));
}

function showTyping(userId: string): void {
  clearTimeout(typingTimers.get(userId));
  typingTimers.set(
    userId,
    setTimeout(() => clearTyping(userId), 3000),
  );
  renderTyping();
}

function clearTyping(userId: string): void {
  clearTimeout(typingTimers.get(userId));
  if (typingTimers.delete(userId)) renderTyping();
}

function renderTyping(): void {
  const who = [...typingTimers.keys()].map(nameOf);
  $("#typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

function onNotification(n: NotificationEvent): void {
  const list = $("#notifications");
  if (n.type === "notification_read") {
    const li = list.querySelector(`li[data-notification-id="${n.notificationId}"]`);
    li?.classList.remove("unread");
    li?.querySelector("button")?.remove();
  } else {
    const li = el("li", `unread ${n.priority}`);
    li.dataset.notificationId = n.notificationId;
    const read = el("button", "", "Mark read");
    read.type = "button";
    read.addEventListener("click", () => {
      read.disabled = true;
      client.notifications.read(n.notificationId).catch(() => {
        read.disabled = false;
      });
    });
    li.append(read, el("strong", "", n.title), el("div", "", n.message));
    list.prepend(li);
  }
  $("#unread").textContent = String(list.querySelectorAll("li.unread").length);
}

$("#start-analysis").addEventListener("click", async () => {
  if (!courseId) return;
  try {
    const answer = await call<{ analysisId: string }>("POST", "/api/analyses", { courseId, input: { source: "demo" } });
    analysisId = answer.analysisId;
    $("#analysis-id").textContent = `Analysis ${analysisId.slice(0, 8)}…`;
    $("#analysis-id").dataset.analysisId = analysisId;
    setProgress(0, "Waiting for the analysis service…");
  } catch (err) {
    $("#app-error").textContent = (err as Error).message;
  }
});

function onProgress(p: ProgressEvent): void {
  if (p.analysisId && analysisId && p.analysisId !== analysisId) return;
  const pct = p.progress ?? 0;
  setProgress(pct, p.type === "analysis_complete" ? "Complete" : `${pct}%`);
}

function setProgress(pct: number, label: string): void {
  $("#progress-fill").style.width = `${pct}%`;
  $(".bar").setAttribute("aria-valuenow", String(pct));
  $("#progress-label").textContent = label;
}

const TRANSPORTS: Record<Mode, string> = {
  socket: "via Socket.IO",
  sse: "via server-sent events",
  polling: "via HTTP long polling",
};

function showStatus(status: Status): void {
  const badge = $("#status");
  badge.textContent = status;
  badge.className = `status ${status}`;
  badge.dataset.status = status;
  // Which transport carries the streams (the status says whether it works).
  const transport = $("#transport");
  transport.textContent = status === "offline" ? "" : TRANSPORTS[client.mode];
  transport.dataset.mode = client.mode;
  // Presence and typing travel over sockets only: while polling they may be stale.
  $("#presence").classList.toggle("stale", status !== "online");
  $("#presence").title = status === "online" ? "" : "presence is live over sockets only";
}
