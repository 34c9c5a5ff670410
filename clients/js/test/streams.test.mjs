// Unit tests of the cursor logic (no server): exactly once, in order.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Streams } from "../dist/streams/cursors.js";

function setup() {
  const delivered = [];
  const gaps = [];
  const streams = new Streams(
    (key, e) => delivered.push(e.seq),
    (key) => gaps.push(key),
  );
  return { streams, delivered, gaps };
}

const ev = (seq) => ({ seq });

test("live duplicates and replays at or below the cursor are dropped", () => {
  const { streams, delivered } = setup();
  streams.track("messages:c", 0);
  for (const seq of [1, 2, 2, 1, 3]) streams.live("messages:c", ev(seq));
  streams.page("messages:c", [ev(2), ev(3), ev(4)], true);
  assert.deepEqual(delivered, [1, 2, 3, 4]);
  assert.equal(streams.cursor("messages:c"), 4);
});

test("live events wait while a replay runs, and an event in both is delivered once", () => {
  const { streams, delivered } = setup();
  streams.track("messages:c", 2);
  streams.beginSync("messages:c");
  streams.live("messages:c", ev(5)); // arrives live before the join ack
  streams.live("messages:c", ev(6));
  assert.deepEqual(delivered, []);
  streams.page("messages:c", [ev(3), ev(4), ev(5)], true); // missed holds 5 too
  assert.deepEqual(delivered, [3, 4, 5, 6]);
});

test("a page that is not the last keeps live events held", () => {
  const { streams, delivered } = setup();
  streams.track("notifications:u", 0);
  streams.beginSync("notifications:u");
  streams.live("notifications:u", ev(4));
  streams.page("notifications:u", [ev(1), ev(2)], false);
  assert.deepEqual(delivered, [1, 2]);
  streams.page("notifications:u", [ev(3)], true);
  assert.deepEqual(delivered, [1, 2, 3, 4]);
});

test("a live event that skips ahead asks for a catch-up and waits for it", () => {
  const { streams, delivered, gaps } = setup();
  streams.track("messages:c", 1);
  streams.live("messages:c", ev(3));
  streams.live("messages:c", ev(4));
  assert.deepEqual(delivered, []);
  assert.deepEqual(gaps, ["messages:c"]); // asked once
  streams.beginSync("messages:c");
  streams.page("messages:c", [ev(2), ev(3)], true);
  assert.deepEqual(delivered, [2, 3, 4]);
});

test("streams the client cannot replay (watched progress) are only deduplicated", () => {
  const { streams, delivered, gaps } = setup();
  streams.live("progress:other", ev(7));
  streams.live("progress:other", ev(7));
  streams.live("progress:other", ev(9));
  assert.deepEqual(delivered, [7, 9]);
  assert.deepEqual(gaps, []);
});

test("snapshot lists the cursors to resume with; reset replays from an explicit since", () => {
  const { streams, delivered } = setup();
  streams.track("messages:c", 10);
  streams.track("progress:u", 3);
  assert.deepEqual(streams.snapshot(), { "messages:c": 10, "progress:u": 3 });
  streams.reset("messages:c", 0);
  streams.page("messages:c", [ev(1)], true);
  assert.deepEqual(delivered, [1]);
});
