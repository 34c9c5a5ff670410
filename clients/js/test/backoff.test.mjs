// Reconnection backoff (socket.io-client's, configured by the client): delays grow
// exponentially from reconnectionDelay and are capped at reconnectionDelayMax.
import assert from "node:assert/strict";
import { test } from "node:test";
import { freePort, makeClient, signToken, waitFor } from "./helpers.mjs";

const token = signToken({ sub: "00000000-0000-4000-8000-000000000001", role: "STUDENT" });

/** Times of the first `n` reconnection attempts against a port where nothing listens. */
async function attemptTimes(t, n, options) {
  const port = await freePort(); // released at once: connections are refused
  const times = [];
  const client = makeClient(`http://127.0.0.1:${port}`, token, { fallback: false, transports: ["websocket"], ...options });
  t.after(() => client.close());
  client.on("reconnecting", () => times.push(performance.now()));
  await waitFor(() => times.length >= n, `${n} reconnection attempts`, 15_000);
  client.close();
  return { intervals: times.slice(1).map((at, i) => at - times[i]), client };
}

test("without jitter, delays double from reconnectionDelay up to reconnectionDelayMax", async (t) => {
  const { intervals, client } = await attemptTimes(t, 7, {
    reconnectionDelay: 100,
    reconnectionDelayMax: 600,
    randomizationFactor: 0,
  });
  // attempt k starts delay(k) after attempt k-1 failed: 200, 400, then capped at 600.
  const expected = [200, 400, 600, 600, 600, 600];
  intervals.forEach((ms, i) => {
    assert.ok(ms >= expected[i] - 15, `interval ${i} = ${ms.toFixed(0)} ms, expected about ${expected[i]}`);
    assert.ok(ms <= expected[i] + 250, `interval ${i} = ${ms.toFixed(0)} ms, expected about ${expected[i]}`);
  });
  assert.equal(client.status, "offline", "sockets only, every attempt failing: offline");
});

test("with jitter, each delay stays within +-randomizationFactor and never above the cap", async (t) => {
  const { intervals } = await attemptTimes(t, 9, {
    reconnectionDelay: 100,
    reconnectionDelayMax: 400,
    randomizationFactor: 0.5,
  });
  const base = [200, 400, 400, 400, 400, 400, 400, 400];
  intervals.forEach((ms, i) => {
    assert.ok(ms >= base[i] * 0.5 - 15, `interval ${i} = ${ms.toFixed(0)} ms below the jitter range of ${base[i]}`);
    assert.ok(ms <= Math.min(base[i] * 1.5, 400) + 250, `interval ${i} = ${ms.toFixed(0)} ms above the cap`);
  });
  const later = intervals.slice(2).reduce((a, b) => a + b, 0) / (intervals.length - 2);
  assert.ok(later > intervals[0] * 0.75 || later > 250, "later delays are not shorter than the first");
});
