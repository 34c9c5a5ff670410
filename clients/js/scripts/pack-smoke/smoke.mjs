// Runs in a fresh folder where only the packed tarball is installed: the package must
// import by its name (ESM, through `exports`) and talk to a real server.
import assert from "node:assert/strict";
import { createClient, CoursecastClient, CoursecastError, ChatApi, newClientMsgId } from "@coursecast/client";
import pkg from "@coursecast/client/package.json" with { type: "json" };

// The repository's server helpers (real binary, fresh data dir, seeded users).
const { startServer, waitFor, within } = await import(process.env.COURSECAST_TEST_HELPERS);

assert.equal(pkg.name, "@coursecast/client");
assert.equal(typeof CoursecastClient, "function");
assert.equal(typeof CoursecastError, "function");
assert.equal(typeof ChatApi, "function");
assert.match(newClientMsgId(), /^[A-Za-z0-9_-]+$/);

const server = await startServer({ students: 1 });
const client = createClient({ url: server.url, getToken: async () => server.seed.users[0].token });
try {
  await waitFor(() => client.status === "online", "the installed client to come online");
  const heard = new Promise((resolve) => client.chat.on("message", resolve));
  await client.chat.join(server.seed.courseId);
  const { event } = await client.chat.send(server.seed.courseId, "hello from the packed client");
  assert.equal(event.content, "hello from the packed client");
  const live = await within(heard, 10_000, "the message back over the socket");
  assert.equal(live.messageId, event.messageId);
  console.log(`ok: ${pkg.name}@${pkg.version} installed from its tarball, online, sent and received seq ${event.seq}`);
} finally {
  client.close();
  await server.stop();
}
