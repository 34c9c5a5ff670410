// Unit tests of the text/event-stream parser (no server): fields, multi-line data,
// comments, retry, the last event ID, and chunks split anywhere.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventStreamParser } from "../dist/transport/event-stream.js";

const events = (records) => records.filter((r) => r.kind === "event");

test("an event: name, one-line data and id; the blank line dispatches it", () => {
  const p = new EventStreamParser();
  assert.deepEqual(p.push('event: message\ndata: {"seq":1}\nid: 1.0.0\n'), [], "not dispatched before the blank line");
  assert.deepEqual(p.push("\n"), [{ kind: "event", event: "message", data: '{"seq":1}', id: "1.0.0" }]);
  assert.equal(p.lastEventId, "1.0.0");
});

test("multi-line data is joined with newlines; no event name means 'message'", () => {
  const p = new EventStreamParser();
  assert.deepEqual(events(p.push("data: first\ndata:second\ndata\ndata:  two spaces\n\n")), [
    { kind: "event", event: "message", data: "first\nsecond\n\n two spaces", id: "" },
  ]);
});

test("comments (the heartbeat) and retry are reported; a bad retry is ignored", () => {
  const p = new EventStreamParser();
  assert.deepEqual(p.push(": ping\n:\nretry: 2000\nretry: 2s\n"), [
    { kind: "comment", text: "ping" },
    { kind: "comment", text: "" },
    { kind: "retry", ms: 2000 },
  ]);
});

test("the last id carries over to events without one; an empty id clears it", () => {
  const p = new EventStreamParser();
  const out = events(p.push("id: 7\nevent: a\ndata: x\n\nevent: b\ndata: y\n\nid\ndata: z\n\n"));
  assert.deepEqual(
    out.map((e) => [e.event, e.id]),
    [["a", "7"], ["b", "7"], ["message", ""]],
  );
});

test("an id with a NUL is ignored; unknown fields are ignored; no data means no event", () => {
  const p = new EventStreamParser();
  assert.deepEqual(p.push("id: 3\n\nid: 4\0x\nfoo: bar\nevent: ready\n\n"), []);
  assert.equal(p.lastEventId, "3", "an id-only block sets the id without dispatching");
  assert.deepEqual(events(p.push("data: after\n\n")), [{ kind: "event", event: "message", data: "after", id: "3" }]);
});

test("CRLF, CR and LF all end lines, even when a CRLF is split between chunks", () => {
  const p = new EventStreamParser();
  const out = [
    ...p.push("event: one\r\ndata: 1\r"),
    ...p.push("\n\r"),
    ...p.push("\nevent: two\rdata: 2\r\r"),
  ];
  assert.deepEqual(
    events(out).map((e) => [e.event, e.data]),
    [["one", "1"], ["two", "2"]],
  );
});

test("a frame cut into one-character chunks parses the same", () => {
  const text = 'retry: 2000\nevent: ready\nid: 4.9\ndata: {"streams":[]}\n\n: ping\nevent: message\nid: 5.9\ndata: {"seq":5}\n\n';
  const whole = new EventStreamParser().push(text);
  const p = new EventStreamParser();
  const pieces = [...text].flatMap((ch) => p.push(ch));
  assert.deepEqual(pieces, whole);
  assert.deepEqual(
    events(whole).map((e) => [e.event, e.id]),
    [["ready", "4.9"], ["message", "5.9"]],
  );
});

test("end() drops an event the connection cut before its blank line", () => {
  const p = new EventStreamParser();
  p.push("event: message\ndata: half");
  p.end();
  assert.deepEqual(p.push("event: other\ndata: whole\n\n"), [{ kind: "event", event: "other", data: "whole", id: "" }]);
});
