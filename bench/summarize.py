#!/usr/bin/env python3
"""Turns a bench/run.sh results directory into the Markdown tables of BENCHMARKS.md.

    python3 bench/summarize.py bench/results/<run>

Figures are medians over rounds; "spread" is the smallest and largest round.
"steal %" is the share of the machine's CPU time the hypervisor gave to others
during the measurement ("-" for results from generators that did not record it).
Where bench/run.sh ran a scenario again because of steal, only the attempt with the
least steal (the first of equals) counts; the summary says how many were set aside.
The nodes group (labels nodes-1, nodes-2, ...) gets a table of its own per scenario.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

SERVERS = ["baseline", "bare", "sqlite", "postgres"]
# The floor the big-course targets are judged against (bench/bare-socketioxide).
FLOOR = "bare"
COURSECAST = ["sqlite", "postgres"]
# The nodes group of bench/run.sh: coursecast as a cluster of N nodes (label nodes-N).
NODES_RUNS = [
    ("fanout-nodes", "Fan-out over 1, 2, 3 nodes: one course, subscribers and senders spread over the nodes"),
    ("fanout-nodes-relay", "The same with every sender on node 1: the other nodes only relay"),
    ("fanout-nodes-courses", "Fan-out over 1, 2, 3 nodes: 20 courses, each course's members on one node"),
]


def load(directory):
    rows = []
    for line in (Path(directory) / "results.jsonl").read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def steal_of(rows):
    """The highest steal of an attempt's steps (0 when none was recorded)."""
    return max((r["results"].get("cpu", {}).get("stealPct") or 0 for r in rows), default=0)


def kept_attempts(rows):
    """Per server, round and scenario, the rows of the attempt with the least steal,
    and the (server, round, scenario, attempt, steal) of each attempt set aside."""
    attempts = defaultdict(lambda: defaultdict(list))
    for r in rows:
        attempts[(r["label"], r["round"], r["run"])][r.get("attempt", 1)].append(r)
    kept, set_aside = [], []
    for key, by_attempt in sorted(attempts.items()):
        best = min(by_attempt, key=lambda a: (steal_of(by_attempt[a]), a))
        kept += by_attempt[best]
        set_aside += [(*key, a, steal_of(rs)) for a, rs in sorted(by_attempt.items()) if a != best]
    return kept, set_aside


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def spread(values, digits=1):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return ""
    return f" ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def cell(values, digits=1):
    return fmt(med(values), digits) + spread(values, digits)


def by(rows, run):
    out = defaultdict(list)
    for r in rows:
        if r.get("run") == run:
            out[r["label"]].append(r)
    return out


def table(header, lines):
    text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    text += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(text)


def main(directory):
    rows, set_aside = kept_attempts(load(directory))
    servers = [s for s in SERVERS if any(r["label"] == s for r in rows)]
    out = []
    machine = Path(directory) / "machine.txt"
    if machine.exists():
        out.append("```text\n" + machine.read_text().strip() + "\n```\n")
    rounds = sorted({r["round"] for r in rows})
    out.append(f"Rounds: {len(rounds)}. Cells: median (min–max over rounds).\n")
    if set_aside:
        out.append(f"Set aside for steal ({len(set_aside)} attempts; per server, round and scenario the "
                   "attempt with the least steal counts): " +
                   "; ".join(f"{s} {run} round {rd} attempt {a} ({steal:.1f} %)"
                             for (s, rd, run, a, steal) in set_aside) + ".\n")

    # Fan-out sweep: per rate, per server.
    fan = by(rows, "fanout")
    rates = sorted({r["params"]["rate"] for rs in fan.values() for r in rs})
    lines = []
    highest = {}
    for s in servers:
        per_round_best = defaultdict(float)
        for r in fan.get(s, []):
            if r["results"]["held"]:
                per_round_best[r["round"]] = max(per_round_best[r["round"]], r["params"]["rate"])
        highest[s] = [per_round_best.get(rd, 0.0) for rd in rounds]
        for rate in rates:
            rs = [r for r in fan.get(s, []) if r["params"]["rate"] == rate]
            if not rs:
                continue
            res = [r["results"] for r in rs]
            lines.append([
                s, fmt(rate, 0),
                cell([x["latency"]["p50Ms"] for x in res]),
                cell([x["latency"]["p99Ms"] for x in res]),
                cell([x["latency"]["maxMs"] for x in res]),
                cell([x["deliveredPerSec"] for x in res], 0),
                cell([x["missedLive"] for x in res], 0),
                cell([x["lostAfterRepair"] for x in res], 0),
                cell([x["ackLatency"]["p99Ms"] for x in res]),
                cell([x["cpu"]["serverPct"] for x in res], 0),
                cell([x["cpu"]["generatorPct"] for x in res], 0),
                cell([r["loadAtStart"][0] for r in rs], 2),
                cell([x["cpu"].get("stealPct") for x in res], 1),
                f"{sum(x['held'] for x in res)}/{len(res)}",
            ])
    if lines:
        out.append("### Fan-out: 1,000 subscribers of one course, 10 senders\n")
        out.append(table(["server", "msg/s", "p50 ms", "p99 ms", "max ms", "delivered/s", "missed live",
                          "lost after repair", "ack p99 ms", "server CPU %", "generator CPU %", "load at start",
                          "steal %", "held"], lines))
        out.append("\nHighest rate held (p99 < 200 ms, nothing lost, every send acked) per round: " +
                   "; ".join(f"{s}: {', '.join(fmt(v, 0) for v in highest[s])}" for s in servers) + "\n")

    def simple(run, title, columns):
        data = by(rows, run)
        lines = []
        for s in servers:
            res = [r["results"] for r in data.get(s, [])]
            if res:
                loads = [r["loadAtStart"][0] for r in data.get(s, [])]
                steal = [x.get("cpu", {}).get("stealPct") for x in res]
                lines.append([s] + [cell([f(x) for x in res], d) for (_, f, d) in columns] +
                             [cell(loads, 2), cell(steal, 1)])
        if not lines:
            return  # not part of this run (SCENARIOS)
        out.append(f"### {title}\n")
        out.append(table(["server"] + [c[0] for c in columns] + ["load at start", "steal %"], lines) + "\n")

    simple("idle", "Idle memory (connections joined, courses of 50)", [
        ("connections held", lambda x: x["held"], 0),
        ("server KiB / connection", lambda x: x["serverKiBPerConnection"], 2),
        ("RSS before KiB", lambda x: x["serverRssBeforeKiB"], 0),
        ("RSS after KiB", lambda x: x["serverRssAfterKiB"], 0),
        ("failed", lambda x: x["failed"], 0),
    ])
    connect_cols = [
        ("succeeded", lambda x: x["succeeded"], 0),
        ("connect+join / s", lambda x: x["connectsPerSec"], 0),
        ("p50 ms", lambda x: x["connectJoin"]["p50Ms"], 1),
        ("p99 ms", lambda x: x["connectJoin"]["p99Ms"], 1),
        ("failed", lambda x: x["failed"], 0),
        ("hung", lambda x: x["hung"], 0),
        ("dropped while held", lambda x: x["droppedWhileHeld"], 0),
        ("server CPU %", lambda x: x["cpu"]["serverPct"], 0),
    ]
    simple("connect", "Handshakes: authenticated connect + join (courses of 50)", connect_cols)
    simple("connect-one-course", "Handshakes into one course (every join announces presence to the room)", connect_cols)
    simple("big-course", "One big course: every connection joins the same course", connect_cols + [
        ("server KiB / connection", lambda x: x.get("serverKiBPerConnection"), 2),
    ])
    big_course_targets(rows, servers, out)
    big_fanout_cols = [
        ("subscribers", lambda x: x["subscribers"], 0),
        ("msg/s", lambda x: x["sendRate"], 1),
        ("delivered/s", lambda x: x["deliveredPerSec"], 0),
        ("p50 ms", lambda x: x["latency"]["p50Ms"], 1),
        ("p99 ms", lambda x: x["latency"]["p99Ms"], 1),
        ("max ms", lambda x: x["latency"]["maxMs"], 1),
        ("ack p99 ms", lambda x: x["ackLatency"]["p99Ms"], 1),
        ("missed live", lambda x: x["missedLive"], 0),
        ("lost after repair", lambda x: x["lostAfterRepair"], 0),
        ("unanswered sends", lambda x: x["unanswered"], 0),
        ("server CPU %", lambda x: x["cpu"]["serverPct"], 0),
        ("held", lambda x: x["held"], 0),
    ]
    simple("fanout-big", "Fan-out to one course of 10,000 at 10 msg/s (100,000 deliveries/s)", big_fanout_cols)
    simple("fanout-big-churn", "The same, with 30 % of the room leaving and joining again all the time",
           big_fanout_cols + [
               ("churn joins", lambda x: x.get("churn", {}).get("joins"), 0),
               ("churn leaves", lambda x: x.get("churn", {}).get("leaves"), 0),
               ("churn refused", lambda x: x.get("churn", {}).get("refused"), 0),
           ])
    simple("rooms", "Rooms: many courses of 5 members, one sender each", [
        ("sent/s", lambda x: x["sendRate"], 0),
        ("stored (acked) events/s", lambda x: x["storedPerSec"], 0),
        ("p50 ms", lambda x: x["latency"]["p50Ms"], 1),
        ("p99 ms", lambda x: x["latency"]["p99Ms"], 1),
        ("ack p99 ms", lambda x: x["ackLatency"]["p99Ms"], 1),
        ("lost after repair", lambda x: x["lostAfterRepair"], 0),
        ("ack errors", lambda x: sum(x["ackErrors"].values()), 0),
        ("unanswered sends", lambda x: x["unanswered"], 0),
        ("server CPU %", lambda x: x["cpu"]["serverPct"], 0),
    ])
    # Long polling and SSE: clients reading one course while 2 msg/s are posted.
    def reading(clients):
        return [
            ("clients", lambda x: x[clients], 0),
            ("p50 ms", lambda x: x["latency"]["p50Ms"], 1),
            ("p99 ms", lambda x: x["latency"]["p99Ms"], 1),
            ("max ms", lambda x: x["latency"]["maxMs"], 1),
            ("lost", lambda x: x["lost"], 0),
        ]
    cpu = ("server CPU %", lambda x: x["cpu"]["serverPct"], 0)
    per_delivery = ("server CPU µs / delivery", lambda x: x.get("serverCpuUsPerDelivery"), 1)
    simple("polling", "Long polling: clients waiting on one course, 2 msg/s posted", reading("waitingAtStart") + [
        ("poll errors", lambda x: sum(x["pollErrors"].values()), 0),
        cpu,
        per_delivery,
    ])
    sse_cols = reading("openAtStart") + [
        ("duplicates", lambda x: x["duplicates"], 0),
        ("reconnects", lambda x: x["reconnects"], 0),
        ("stream errors", lambda x: sum(x["streamErrors"].values()), 0),
        cpu,
        per_delivery,
    ]
    simple("sse", "Server-Sent Events: clients streaming one course, 2 msg/s posted (coursecast only)", sse_cols)
    simple("sse-50", "Server-Sent Events at 50 msg/s (target: p99 < 50 ms, nothing lost; coursecast only)", sse_cols)
    for run, title in NODES_RUNS:
        nodes_table(rows, run, title, out)
    print("\n".join(out))


def node_count(label):
    """nodes-3 -> 3; None for the single-server kinds."""
    prefix, _, n = label.partition("-")
    return int(n) if prefix == "nodes" and n.isdigit() else None


def per_node(results, field):
    """A Redis figure (bytes per delivery) for each node, median over rounds: "a / b / c"."""
    counts = {len(x.get("nodes", [])) for x in results}
    if len(counts) != 1:
        return "-"
    cells = []
    for i in range(counts.pop()):
        values = [(x["nodes"][i].get("cluster") or {}).get(field) for x in results]
        cells.append(fmt(med(values), 2))
    return " / ".join(cells) if cells else "-"


def nodes_table(rows, run, title, out):
    """1 vs 2 vs 3 nodes of one cluster: latency, loss, server CPU per delivery (all
    nodes together) and each node's Redis bytes per delivery to its own subscribers."""
    data = by(rows, run)
    labels = sorted((label for label in data if node_count(label)), key=node_count)
    lines = []
    for label in labels:
        rs = data[label]
        res = [r["results"] for r in rs]
        lines.append([
            node_count(label),
            cell([x["sendRate"] for x in res]),
            cell([x["deliveredPerSec"] for x in res], 0),
            cell([x["latency"]["p50Ms"] for x in res]),
            cell([x["latency"]["p99Ms"] for x in res]),
            cell([x["gaps"] for x in res], 0),
            cell([x["missedLive"] for x in res], 0),
            cell([x["lostAfterRepair"] for x in res], 0),
            cell([x["cpu"]["serverPct"] for x in res], 0),
            cell([x["cpu"]["generatorPct"] for x in res], 0),
            cell([x.get("serverCpuUsPerDelivery") for x in res], 2),
            per_node(res, "bytesInPerDelivery"),
            per_node(res, "bytesOutPerDelivery"),
            cell([r["loadAtStart"][0] for r in rs], 2),
            cell([x["cpu"].get("stealPct") for x in res], 1),
        ])
    if not lines:
        return
    out.append(f"### {title}\n")
    out.append("Nodes and generator share the machine's cores: compare CPU per delivery, not throughput. "
               "Gaps: jumps in `seq` a subscriber saw live, each repaired with `join {since}`. "
               "Redis bytes per delivery: each node's in (relayed from other nodes) and out (published), "
               "over the copies its own subscribers were owed, node 1 first.\n")
    out.append(table(["nodes", "msg/s", "delivered/s", "p50 ms", "p99 ms", "gaps", "missed live", "lost after repair",
                      "server CPU %", "generator CPU %", "server CPU µs / delivery",
                      "Redis in B / delivery, per node", "Redis out B / delivery, per node",
                      "load at start", "steal %"], lines) + "\n")


def big_course_targets(rows, servers, out):
    """The one-course targets, judged against the bare socketioxide server of the same
    run: connect+join rate at least 0.8x, p99 under 250 ms, nothing failed or hung,
    server memory per connection within 2 KiB."""
    data = by(rows, "big-course")
    floor = [r["results"] for r in data.get(FLOOR, [])]
    if not floor:
        return
    floor_rate = med([x["connectsPerSec"] for x in floor])
    floor_kib = med([x.get("serverKiBPerConnection") for x in floor])
    lines = []
    for s in servers:
        if s not in COURSECAST:
            continue
        res = [r["results"] for r in data.get(s, [])]
        if not res:
            continue
        rate = med([x["connectsPerSec"] for x in res])
        p99 = med([x["connectJoin"]["p99Ms"] for x in res])
        kib = med([x.get("serverKiBPerConnection") for x in res])
        bad = sum(x["failed"] + x["hung"] for x in res)
        ratio = rate / floor_rate if rate is not None and floor_rate else None
        extra = kib - floor_kib if kib is not None and floor_kib is not None else None
        met = (ratio is not None and ratio >= 0.8 and p99 is not None and p99 < 250 and bad == 0
               and extra is not None and extra <= 2.0)
        lines.append([s, fmt(ratio, 2), fmt(p99), fmt(extra, 2), bad, fmt(met)])
    if lines:
        out.append("Targets against bare socketioxide in the same run (rate >= 0.8x, p99 < 250 ms, "
                   "none failed or hung, memory within 2 KiB per connection):\n")
        out.append(table(["server", "rate / bare", "p99 ms", "KiB / connection over bare",
                          "failed + hung", "met"], lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest")
