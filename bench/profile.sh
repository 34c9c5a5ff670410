#!/usr/bin/env bash
# Profiles coursecast under the fan-out scenario (or SCENARIO=rooms: 400 courses of 5,
# RATE msg/s in all; SCENARIO=polling: 5,000 long polls, RATE msg/s; SCENARIO=connect:
# 18,000 connect+join in courses of 50; SCENARIO=big-course: 10,000 connect+join in one
# course; SCENARIO=churn: fan-out to 10,000 in one course at RATE msg/s while 3,000
# more leave and join every 2 s): a release build with line tables (target/profiling), SQLite
# (or DATABASE_URL), 1,000 subscribers, RATE msg/s; samples the server's
# CPU with `perf record -e cpu-clock` (software clock: this VM exposes no hardware
# counters) and DWARF call graphs, and prints the hottest symbols.
#
#   bench/profile.sh              # RATE=500 SECS=8
#   RATE=1000 bench/profile.sh
#   SCENARIO=rooms RATE=20000 bench/profile.sh
#   SCENARIO=polling RATE=2 bench/profile.sh
#   SCENARIO=connect SECS=6 bench/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
SCENARIO=${SCENARIO:-fanout}
RATE=${RATE:-500}
SECS=${SECS:-8}
# Seconds from the generator's start to the profile's (connections, courses, warm-up).
PRE=${PRE:-$(case "$SCENARIO" in rooms) echo 20 ;; polling) echo 15 ;; connect) echo 12 ;; big-course) echo 1 ;; churn) echo 12 ;; *) echo 6 ;; esac)}
PORT=${PORT:-3300}
OUT=${OUT:-$root/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}
TARGET=${PROFILE_TARGET_DIR:-$root/target/profiling}
mkdir -p "$OUT"
work=$(mktemp -d /tmp/coursecast-profile.XXXXXX)

# The load generator shares the profiling build's dependencies: one build, not two.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR="$TARGET" cargo build --release -p coursecast -p coursecast-bench
export JWT_SECRET=profile-secret-0123456789abcdef0123456789 LOG_LEVEL=warn DATA_DIR="$work/data"
export MAX_CONNECTIONS_PER_IP=0 WEBSOCKET_MAX_CONNECTIONS=20000 WEBSOCKET_MAX_SOCKETS_PER_USER=100 SOCKET_CONNECTS_PER_SECOND_PER_IP=100000
export SOCKET_EVENTS_PER_SECOND=100000 SOCKET_EVENTS_BURST=100000
"$TARGET/release/coursecast" seed --students 18000 --out "$work/seed.json" >/dev/null
env PORT="$PORT" "$TARGET/release/coursecast" >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

"$TARGET/release/coursecast-bench" --url "http://127.0.0.1:$PORT" --seed "$work/seed.json" --server-pid "$server" \
  --label profile $(case "$SCENARIO" in
    rooms) echo rooms --courses 400 --members 5 --rate "$RATE" --duration $((SECS + PRE)) --drain 10 ;;
    polling) echo polling --clients 5000 --rate "$RATE" --duration $((SECS + PRE)) --drain 10 ;;
    connect) echo connect --connections 18000 --course-size 50 --hold-secs 1 ;;
    big-course) echo connect --connections 10000 --hold-secs 1 ;;
    churn) echo fanout --subscribers 10000 --senders 10 --rate "$RATE" --duration $((SECS + PRE)) --drain 10 \
      --churn 3000 --churn-period-ms 2000 ;;
    *) echo fanout --subscribers 1000 --senders 10 --rate "$RATE" --duration $((SECS + PRE)) --drain 10 ;;
    esac) \
  >"$OUT/bench.out" 2>"$OUT/bench.err" &
bench=$!
sleep "$PRE"
perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$server" -o "$OUT/perf.data" -- sleep "$SECS" 2>"$OUT/perf.record.log"
wait $bench || true
tail -1 "$OUT/bench.out" >"$OUT/bench.json"

perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' >"$OUT/by-dso.txt" || true
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -60 >"$OUT/self.txt" || true
perf report -i "$OUT/perf.data" --children --sort sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -80 >"$OUT/children.txt" || true
echo "== by DSO";            cat "$OUT/by-dso.txt"
echo "== self time (top 60)"; cat "$OUT/self.txt"
echo "== inclusive (top 80)"; cat "$OUT/children.txt"
echo "profile in $OUT"
