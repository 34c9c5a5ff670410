"""Tests of bench/summarize.py: which attempts of a re-measured scenario count.

    python3 -m unittest discover -s bench -p 'test_*.py'
"""

import contextlib
import io
import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import summarize  # noqa: E402


def polling(label, steal, p99, attempt=None, round_=1):
    row = {
        "round": round_, "run": "polling", "label": label, "loadAtStart": [0.5, 0.5, 0.5],
        "results": {
            "waitingAtStart": 5000, "lost": 0, "pollErrors": {},
            "latency": {"p50Ms": p99 / 2, "p99Ms": p99, "maxMs": p99 + 10},
            "cpu": {"serverPct": 40.0, "generatorPct": 20.0, "stealPct": steal},
        },
    }
    if attempt is not None:
        row["attempt"] = attempt
    return row


def fanout_step(rate, steal, attempt):
    return {"round": 1, "run": "fanout", "label": "sqlite", "attempt": attempt,
            "params": {"rate": rate}, "results": {"cpu": {"stealPct": steal}}}


class KeptAttempts(unittest.TestCase):
    def test_the_attempt_with_the_least_steal_counts_whole(self):
        rows = [fanout_step(10, 2.0, 1), fanout_step(20, 30.0, 1),
                fanout_step(10, 9.0, 2), fanout_step(20, 8.0, 2)]
        kept, set_aside = summarize.kept_attempts(rows)
        self.assertEqual([(r["attempt"], r["params"]["rate"]) for r in kept], [(2, 10), (2, 20)],
                         "an attempt is judged by its worst step, and kept or set aside whole")
        self.assertEqual(set_aside, [("sqlite", 1, "fanout", 1, 30.0)])

    def test_the_first_of_equals_counts_and_rows_without_attempts_are_the_first(self):
        rows = [polling("sqlite", 12.0, 150.0), polling("sqlite", 12.0, 90.0, attempt=2)]
        kept, set_aside = summarize.kept_attempts(rows)
        self.assertEqual([r["results"]["latency"]["p99Ms"] for r in kept], [150.0],
                         "the rule looks at steal only, never at the figures")
        self.assertEqual(set_aside, [("sqlite", 1, "polling", 2, 12.0)])

    def test_servers_and_rounds_are_judged_apart(self):
        rows = [polling("sqlite", 40.0, 300.0, 1), polling("sqlite", 1.0, 120.0, 2),
                polling("postgres", 40.0, 310.0, 1), polling("sqlite", 50.0, 500.0, 1, round_=2)]
        kept, set_aside = summarize.kept_attempts(rows)
        self.assertEqual(sorted((r["label"], r["round"], r["attempt"]) for r in kept),
                         [("postgres", 1, 1), ("sqlite", 1, 2), ("sqlite", 2, 1)])
        self.assertEqual(set_aside, [("sqlite", 1, "polling", 1, 40.0)])


def big_course(label, rate, p99, kib, failed=0):
    return {"round": 1, "run": "big-course", "label": label, "loadAtStart": [0.5, 0.5, 0.5],
            "results": {"succeeded": 10000 - failed, "connectsPerSec": rate, "failed": failed, "hung": 0,
                        "connectJoin": {"p50Ms": p99 / 3, "p99Ms": p99}, "droppedWhileHeld": 0,
                        "serverKiBPerConnection": kib, "cpu": {"serverPct": 90.0, "stealPct": 1.0}}}


def summary(rows):
    """What bench/summarize.py prints for a run of these result lines."""
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            summarize.main(directory)
    return out.getvalue()


class Summary(unittest.TestCase):
    def test_big_course_targets_are_judged_against_the_bare_server(self):
        text = summary([big_course("bare", 4000.0, 120.0, 30.0), big_course("sqlite", 3400.0, 200.0, 31.5),
                        big_course("postgres", 3000.0, 200.0, 31.0), big_course("baseline", 1000.0, 900.0, 15.0)])
        self.assertIn("### One big course", text)
        lines = {line.split(" | ")[0]: line for line in text.splitlines() if "| " in line and "/ bare" not in line}
        self.assertIn("| 0.85 | 200.0 | 1.50 | 0 | yes |", lines["| sqlite"])
        self.assertIn("| 0.75 |", lines["| postgres"])
        self.assertTrue(lines["| postgres"].endswith("| no |"), "below 0.8x the bare rate")
        targets = text[text.index("Targets against bare"):]
        self.assertNotIn("baseline", targets, "only coursecast is judged")

    def test_the_tables_use_kept_attempts_and_name_those_set_aside(self):
        rows = [polling("sqlite", 45.0, 900.0, 1), polling("sqlite", 2.0, 130.0, 2),
                polling("baseline", 3.0, 2000.0, 1)]
        text = summary(rows)
        self.assertIn("Set aside for steal (1 attempts", text)
        self.assertIn("sqlite polling round 1 attempt 1 (45.0 %)", text)
        sqlite_line = next(line for line in text.splitlines() if line.startswith("| sqlite |"))
        self.assertIn("| 130.0 |", sqlite_line)
        self.assertNotIn("900.0", text)


def nodes_run(n, p99, us_per_delivery, bytes_in):
    """A fanout-nodes line of n nodes; bytes_in: each node's Redis bytes in per delivery."""
    nodes = [{"url": f"http://127.0.0.1:{3301 + i}", "subscribers": 2000 // n, "expectedDeliveries": 750000 // n,
              "cpuPct": 40.0 / n, "cluster": {"bytesInPerDelivery": b, "bytesOutPerDelivery": 0.1}}
             for i, b in enumerate(bytes_in)]
    return {"round": 1, "run": "fanout-nodes", "label": f"nodes-{n}", "loadAtStart": [0.4, 0.5, 0.5],
            "results": {"sendRate": 25.0, "deliveredPerSec": 50000.0, "gaps": 3 * (n - 1), "missedLive": 0,
                        "lostAfterRepair": 0,
                        "latency": {"p50Ms": p99 / 4, "p99Ms": p99},
                        "cpu": {"serverPct": 40.0 + n, "generatorPct": 30.0, "stealPct": 0.2},
                        "serverCpuUsPerDelivery": us_per_delivery, "nodes": nodes}}


class NodesTable(unittest.TestCase):
    def test_one_line_per_node_count_with_each_nodes_redis_bytes(self):
        text = summary([nodes_run(3, 30.0, 9.5, [0.41, 0.4, 0.39]), nodes_run(1, 10.0, 7.25, [0.0]),
                             nodes_run(2, 20.0, 8.0, [0.2, 0.2]), polling("sqlite", 1.0, 130.0)])
        self.assertIn("### Fan-out over 1, 2, 3 nodes: one course", text)
        self.assertNotIn("20 courses", text, "a scenario the run did not have gets no table")
        section = text[text.index("### Fan-out over"):]
        lines = [line for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
        self.assertEqual([line.split(" | ")[0] for line in lines], ["| 1", "| 2", "| 3"], "ordered by node count")
        self.assertIn("| 7.25 | 0.00 | 0.10 |", lines[0])
        self.assertIn("| 9.50 | 0.41 / 0.40 / 0.39 | 0.10 / 0.10 / 0.10 |", lines[2])
        self.assertIn("| 30.0 | 6 | 0 | 0 |", lines[2], "p99, gaps, missed live, lost")
        self.assertNotIn("nodes-", text[:text.index("### Fan-out over")], "the single-server tables leave nodes out")

    def test_rounds_are_medians_per_node(self):
        rows = [nodes_run(2, 20.0, 8.0, [0.2, 0.3]), nodes_run(2, 22.0, 9.0, [0.4, 0.5])]
        rows[1]["round"] = 2
        text = summary(rows)
        line = next(line for line in text.splitlines() if line.startswith("| 2 |"))
        self.assertIn("| 8.50 (8.00–9.00) | 0.30 / 0.40 |", line)


if __name__ == "__main__":
    unittest.main()
