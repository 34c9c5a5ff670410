// Type-checked (tsc --noEmit) against the installed tarball's declarations: the
// public API a TypeScript application uses must resolve by the package's name.
import {
  createClient,
  CoursecastClient,
  CoursecastError,
  type ClientOptions,
  type MessageEvent,
  type NotificationEvent,
  type PresenceEvent,
  type Status,
} from "@coursecast/client";

const options: ClientOptions = { url: "http://127.0.0.1:3000", getToken: async () => "token" };
const client: CoursecastClient = createClient(options);
const status: Status = client.status;
client.chat.on("message", (m: MessageEvent) => console.log(m.seq, m.content ?? ""));
client.chat.on("presence", (p: PresenceEvent) => console.log(p.count));
client.notifications.on("notification", (n: NotificationEvent) => console.log(n.title));
client.on("error", (err: CoursecastError, fatal: boolean) => console.log(err.code, fatal, status));
export const sent: Promise<MessageEvent> = client.chat.send("course", "hi").then((ack) => ack.event);
