#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md: builds release binaries, seeds, and runs every
# scenario of coursecast-bench against four servers in turn, each on its own port
# with its own data: the Node baseline (bench/baseline-node), bare socketioxide
# (bench/bare-socketioxide: the floor of any socketioxide server, no storage),
# coursecast on SQLite, coursecast on PostgreSQL (a fresh database per round). Servers are interleaved
# within a round, ROUNDS rounds; every scenario gets a freshly started server process.
# bench/summarize.py turns the results into the tables of BENCHMARKS.md (medians).
#
#   bench/run.sh                   # full run, 2 rounds (about 35 minutes)
#   ROUNDS=3 bench/run.sh
#   QUICK=1 ROUNDS=1 bench/run.sh  # small sizes, a couple of minutes: checks the set-up
#   SERVERS="sqlite" bench/run.sh  # a subset (baseline bare sqlite postgres)
#   SCENARIOS="connect connect-one-course" bench/run.sh  # a subset of the runs
#   SCENARIOS="big-course fanout-big fanout-big-churn" bench/run.sh  # one course of 10,000
#   SCENARIOS="fanout-nodes fanout-nodes-relay fanout-nodes-courses" ROUNDS=1 bench/run.sh  # 1, 2, 3 nodes
#
# The nodes group (SCENARIOS fanout-nodes, fanout-nodes-relay, fanout-nodes-courses;
# not among the defaults, it needs Redis) runs coursecast as a cluster: NODES (default "1 2 3")
# nodes on ports 3301.., every one freshly started with the same PostgreSQL database
# (fresh per round and node count), JWT_SECRET and Redis (NODES_REDIS_URL, default
# the machine's at 127.0.0.1:6379), and a channel (REDIS_CHANNEL) of its own per
# start. The 1-node run uses Redis too, so the comparison isolates the cost of
# crossing nodes. Nodes and generator share the machine's cores: CPU per delivery is
# the figure, not throughput.
#
# Before measuring it waits (up to WAIT_IDLE_SECS, default 600) for a 1-minute load
# below MAX_LOAD (0.7) and records the load it started with; before every step, for
# the previous steps' closed connections to leave TIME_WAIT (up to 75 s).
#
# A shared host can take half the CPU from one step to the next (steal time), which no
# waiting beforehand avoids: a scenario run in which any step saw more than STEAL_MAX
# percent steal (default 10) is run again, on a fresh server process, up to
# STEAL_RETRIES more times (default 2). Every attempt goes to results.jsonl with its
# number; bench/summarize.py keeps, per server, round and scenario, the attempt with
# the least steal and says how many it set aside. The rule is the same for every
# server and looks only at the machine, never at the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ROUNDS=${ROUNDS:-2}
QUICK=${QUICK:-0}
SERVERS=${SERVERS:-"baseline bare sqlite postgres"}
SCENARIOS=${SCENARIOS:-"idle connect connect-one-course big-course fanout fanout-big fanout-big-churn rooms polling sse sse-50"}
NODES=${NODES:-"1 2 3"}
NODES_REDIS_URL=${NODES_REDIS_URL:-redis://127.0.0.1:6379}
MAX_LOAD=${MAX_LOAD:-0.7}
STEAL_MAX=${STEAL_MAX:-10}
STEAL_RETRIES=${STEAL_RETRIES:-2}
WAIT_IDLE_SECS=${WAIT_IDLE_SECS:-600}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
WORK=${WORK:-$(mktemp -d /tmp/coursecast-bench.XXXXXX)}
mkdir -p "$OUT"

# Sizes. QUICK=1 shrinks everything to check the set-up.
if [ "$QUICK" = 1 ]; then
  STUDENTS=2000 IDLE_N=1000 CONNECT_N=2000 ONE_COURSE_N=300 FAN_SUBS=200
  FAN_RATES=50,200 FAN_SECS=4 ROOMS_COURSES=40 ROOMS_RATE=2000 ROOMS_SECS=4 POLL_N=300 POLL_SECS=6
  SSE_N=300 SSE_SECS=6
  BIG_N=1000 BIG_CHURN=300 BIG_SECS=5
  NODES_SUBS=300 NODES_SECS=5
else
  STUDENTS=18000 IDLE_N=10000 CONNECT_N=18000 ONE_COURSE_N=2000 FAN_SUBS=1000
  FAN_RATES=10,20,50,100,200,500,1000,2000,5000 FAN_SECS=10 ROOMS_COURSES=400 ROOMS_RATE=25000 ROOMS_SECS=15
  POLL_N=5000 POLL_SECS=20
  # Server-Sent Events: as many clients as long polling, each holding one stream.
  SSE_N=5000 SSE_SECS=20
  # One course of 10,000: joining it, fan-out to all at 10 msg/s, and the same with
  # 30 % of the room (further members) leaving and joining again all the time.
  BIG_N=10000 BIG_CHURN=3000 BIG_SECS=15
  # Nodes: 2,000 subscribers in one course at 25 msg/s (50,000 copies/s, well within
  # one node's budget on 2 cores), senders on every node or all on the first; and
  # 20 courses of 100 at 100 msg/s, each course on one node.
  NODES_SUBS=2000 NODES_SECS=15
fi
NODES_RATE=${NODES_RATE:-25}
NODES_COURSES_RATE=${NODES_COURSES_RATE:-100}
COURSE_SIZE=${COURSE_SIZE:-50}

BENCH="$root/target/release/coursecast-bench"
SERVER="$root/target/release/coursecast"
BARE="$root/target/release/bare-socketioxide"
export JWT_SECRET=${JWT_SECRET:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}

# coursecast's limits, raised for a load test (everything else at its default).
export LOG_LEVEL=${LOG_LEVEL:-warn}
export WEBSOCKET_MAX_CONNECTIONS=20000
export WEBSOCKET_MAX_SOCKETS_PER_USER=100
# The generator opens up to 18,000 connections from four loopback addresses.
export MAX_CONNECTIONS_PER_IP=0
export SOCKET_CONNECTS_PER_SECOND_PER_IP=100000
export SOCKET_EVENTS_PER_SECOND=100000
export SOCKET_EVENTS_BURST=100000
export LONG_POLL_MAX_WAITERS=20000
export SSE_MAX_CONNECTIONS=20000

declare -A PORT=([baseline]=4100 [bare]=4200 [sqlite]=3100 [postgres]=3200)
# Node i of the nodes group listens on NODES_PORT + i.
NODES_PORT=3300

# Which of SCENARIOS belong to the single-server kinds and which to the nodes group.
single_scenarios="" nodes_scenarios=""
for name in $SCENARIOS; do
  case $name in
    fanout-nodes*) nodes_scenarios+=" $name" ;;
    *) single_scenarios+=" $name" ;;
  esac
done
[ -n "$single_scenarios" ] || SERVERS=""
[ -n "$nodes_scenarios" ] || NODES=""

log() { printf '\n[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

log "building release binaries"
cargo build --release -p coursecast -p coursecast-bench -p bare-socketioxide
if [[ " $SERVERS " == *" baseline "* ]]; then
  log "installing the baseline's packages"
  (cd bench/baseline-node && npm ci --no-audit --no-fund --loglevel=error)
fi

{
  echo "started: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "nproc: $(nproc)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "fd limit: $(ulimit -Hn)"
  echo "node: $(node --version)  rustc: $(rustc --version)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) uncommitted paths"
  echo "rounds: $ROUNDS  quick: $QUICK  servers: ${SERVERS:-none}  re-run above steal: $STEAL_MAX % (up to $STEAL_RETRIES times)"
  if [ -n "$NODES" ]; then
    echo "nodes: $NODES (coursecast on PostgreSQL $(psql "$PG_ADMIN" -tAc 'show server_version' | cut -d' ' -f1), Redis $(redis-cli -u "$NODES_REDIS_URL" info server | tr -d '\r' | sed -n 's/^redis_version://p') at $NODES_REDIS_URL); nodes and generator share the $(nproc) cores"
  fi
  echo "scenarios: $SCENARIOS"
} > "$OUT/machine.txt"

log "waiting for a 1-minute load below $MAX_LOAD (up to ${WAIT_IDLE_SECS}s)"
waited=0
while awk -v max="$MAX_LOAD" '{exit !($1 >= max)}' /proc/loadavg && [ "$waited" -lt "$WAIT_IDLE_SECS" ]; do
  sleep 10
  waited=$((waited + 10))
done
echo "load at start: $(cat /proc/loadavg) (waited ${waited}s of up to ${WAIT_IDLE_SECS}s)" | tee -a "$OUT/machine.txt" >&2

# The server under test: one process, or one per node (kind nodes-N); `urls` and
# `pids` are comma lists in the same order, as coursecast-bench takes them.
pids=() urls="" starts=0
database() { # kind round -> the kind's PostgreSQL database of the round
  echo "${PG_ADMIN%/*}/bench_${1/-/}_r${2}_$$"
}
start_server() { # kind round
  local kind=$1 round=$2 logf="$OUT/logs/$1-r$2.server.log" port i
  mkdir -p "$OUT/logs"
  pids=() urls="" starts=$((starts + 1))
  case $kind in
    baseline) env PORT="${PORT[$kind]}" node "$root/bench/baseline-node/server.mjs" >>"$logf" 2>&1 & ;;
    bare) env PORT="${PORT[$kind]}" "$BARE" >>"$logf" 2>&1 & ;;
    sqlite) env PORT="${PORT[$kind]}" DATA_DIR="$WORK/sqlite-r$round" "$SERVER" >>"$logf" 2>&1 & ;;
    postgres) env PORT="${PORT[$kind]}" DATA_DIR="$WORK/postgres-r$round" DATABASE_URL="$(database "$kind" "$round")" \
      "$SERVER" >>"$logf" 2>&1 & ;;
  esac
  case $kind in
    nodes-*)
      # A channel of its own per start: nothing from an earlier run, or from other
      # users of this Redis, reaches these nodes.
      for i in $(seq 1 "${kind#nodes-}"); do
        port=$((NODES_PORT + i))
        env PORT="$port" DATA_DIR="$WORK/$kind-r$round-$i" DATABASE_URL="$(database "$kind" "$round")" \
          REDIS_URL="$NODES_REDIS_URL" REDIS_CHANNEL="coursecast-bench-$$-$starts" \
          "$SERVER" >>"${logf%.server.log}-$i.server.log" 2>&1 &
        pids+=($!)
        urls+="${urls:+,}http://127.0.0.1:$port"
      done
      ;;
    *)
      pids=($!)
      urls="http://127.0.0.1:${PORT[$kind]}"
      ;;
  esac
  local url up
  for url in ${urls//,/ }; do
    up=""
    for _ in $(seq 1 150); do
      curl -sf "$url/healthz" >/dev/null && { up=1; break; }
      sleep 0.2
    done
    [ -n "$up" ] || { echo "the $kind server at $url did not come up (logs: $OUT/logs/$kind-r$round*)" >&2; return 1; }
  done
}

stop_server() {
  local p
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 125); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$p" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_server' EXIT

seed() { # kind round -> seed file path
  local kind=$1 round=$2 file="$WORK/seed-$1-r$2.json"
  case $kind in
    baseline | bare) DATA_DIR="$WORK/$kind-seed" "$SERVER" seed --students "$STUDENTS" --out "$file" >/dev/null ;;
    sqlite) DATA_DIR="$WORK/sqlite-r$round" "$SERVER" seed --students "$STUDENTS" --out "$file" >/dev/null ;;
    postgres | nodes-*)
      local students=$STUDENTS
      [ "$kind" = postgres ] || students=$NODES_SUBS
      psql "$PG_ADMIN" -qc "CREATE DATABASE $(basename "$(database "$kind" "$round")")" >/dev/null
      DATA_DIR="$WORK/$kind-r$round" DATABASE_URL="$(database "$kind" "$round")" \
        "$SERVER" seed --students "$students" --out "$file" >/dev/null
      ;;
  esac
  echo "$file"
}

# The highest steal (percent) of any step in a generator's output, as bench/summarize.py
# judges an attempt (0 when none was recorded).
max_steal() { # output file
  python3 -c '
import json, sys
sys.path.insert(0, sys.argv[1])
import summarize
print(summarize.steal_of([json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]))' "$root/bench" "$1"
}

# Sockets in TIME_WAIT on this machine. The previous step's closed connections stay
# there for 60 s, and while tens of thousands do, the generator's connect() scans
# the kernel's port tables at length: a step started right after a big one measured
# that, not the server (a 10,000-socket join measured 0.61x of bare socketioxide
# right after the bare server's 13,000-socket step, against 0.71-0.75x in alternating
# runs that waited for the table to drain).
time_wait() {
  ss -s | sed -n 's/.*timewait \([0-9]*\).*/\1/p'
}

# Waits (up to TIME_WAIT_SECS, default 75) for fewer than TIME_WAIT_MAX (1,000)
# sockets in TIME_WAIT, so every step starts from the same kernel state.
wait_time_wait() {
  local waited=0
  while [ "$(time_wait)" -ge "${TIME_WAIT_MAX:-1000}" ] && [ "$waited" -lt "${TIME_WAIT_SECS:-75}" ]; do
    sleep 1
    waited=$((waited + 1))
  done
  [ "$waited" = 0 ] || log "waited ${waited}s for TIME_WAIT sockets to drain ($(time_wait) left)"
}

scenario() { # kind round name args...
  local kind=$1 round=$2 name=$3
  shift 3
  local dir="$OUT/r$round" plots="$OUT/svg/attempt" attempt steal least="" out p
  [[ " $SCENARIOS " == *" $name "* ]] || return 0
  mkdir -p "$dir" "$OUT/svg/r$round/$name"
  for attempt in $(seq 1 $((STEAL_RETRIES + 1))); do
    out="$dir/$kind-$name.a$attempt"
    wait_time_wait
    if ! start_server "$kind" "$round"; then
      stop_server
      return 0
    fi
    log "round $round, $kind: $name $* (attempt $attempt)"
    # Four source addresses: one address's ephemeral ports run short past ~14,000
    # connections (Linux gives connect() the even half of 32768-60999), and each
    # further connect() then scans the port range in the kernel.
    "$BENCH" --url "$urls" --seed "$SEED" --server-pid "$(IFS=,; echo "${pids[*]}")" --label "$kind" \
      --svg-dir "$plots" --source-ips 4 "$@" >"$out.out" 2>"$out.err" ||
      echo "!! $kind $name failed (see $out.err)" >&2
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || echo "!! a $kind server process died during $name" | tee -a "$out.err" >&2
    done
    grep '^{' "$out.out" | sed "s/^{/{\"round\":$round,\"run\":\"$name\",\"attempt\":$attempt,/" >>"$OUT/results.jsonl" || true
    stop_server
    sleep 2
    steal=$(max_steal "$out.out" || echo 0)
    # The round's plots are the kept attempt's: the first with the least steal. One
    # folder per scenario: two scenarios at the same rate write the same file names.
    if [ -z "$least" ] || awk -v s="$steal" -v l="$least" 'BEGIN {exit !(s < l)}'; then
      least=$steal
      cp -r "$plots"/. "$OUT/svg/r$round/$name/" 2>/dev/null || true
    fi
    rm -rf "$plots"
    awk -v s="$steal" -v max="$STEAL_MAX" 'BEGIN {exit !(s > max)}' || return 0
    log "steal reached $steal % (above $STEAL_MAX %) during $kind $name"
  done
}

for round in $(seq 1 "$ROUNDS"); do
  for kind in $SERVERS; do
    log "round $round: seeding $kind"
    SEED=$(seed "$kind" "$round")
    scenario "$kind" "$round" idle idle --connections "$IDLE_N" --course-size "$COURSE_SIZE" --settle-secs 10
    scenario "$kind" "$round" connect connect --connections "$CONNECT_N" --course-size "$COURSE_SIZE" --concurrency 256 --hold-secs 5
    scenario "$kind" "$round" connect-one-course connect --connections "$ONE_COURSE_N" --hold-secs 2
    scenario "$kind" "$round" big-course connect --connections "$BIG_N" --hold-secs 5
    scenario "$kind" "$round" fanout fanout --subscribers "$FAN_SUBS" --senders 10 --rate "$FAN_RATES" \
      --duration "$FAN_SECS" --warmup 2 --drain 10 --stop-after-miss
    scenario "$kind" "$round" fanout-big fanout --subscribers "$BIG_N" --senders 10 --rate 10 \
      --duration "$BIG_SECS" --warmup 3 --drain 20
    scenario "$kind" "$round" fanout-big-churn fanout --subscribers "$BIG_N" --senders 10 --rate 10 \
      --duration "$BIG_SECS" --warmup 3 --drain 20 --churn "$BIG_CHURN" --churn-period-ms 2000
    scenario "$kind" "$round" rooms rooms --courses "$ROOMS_COURSES" --members 5 --rate "$ROOMS_RATE" --duration "$ROOMS_SECS"
    scenario "$kind" "$round" polling polling --clients "$POLL_N" --rate 2 --duration "$POLL_SECS" --wait 25
    # The Node baseline and bare socketioxide have no SSE: their polling figures stand beside it.
    if [ "$kind" = sqlite ] || [ "$kind" = postgres ]; then
      scenario "$kind" "$round" sse sse --clients "$SSE_N" --rate 2 --duration "$SSE_SECS"
      scenario "$kind" "$round" sse-50 sse --clients "$SSE_N" --rate 50 --duration "$SSE_SECS"
    fi
    if [ "$kind" = postgres ]; then
      psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $(basename "$(database "$kind" "$round")") WITH (FORCE)" >/dev/null || true
    fi
  done
  # The nodes group: the same fan-out on 1, 2, 3... nodes of one cluster, subscribers
  # and senders spread over the nodes (coursecast-bench fanout says how).
  for n in $NODES; do
    kind=nodes-$n
    log "round $round: seeding $kind"
    SEED=$(seed "$kind" "$round")
    scenario "$kind" "$round" fanout-nodes fanout --subscribers "$NODES_SUBS" --senders 10 --rate "$NODES_RATE" \
      --duration "$NODES_SECS" --warmup 3 --drain 20 --cluster-traffic
    scenario "$kind" "$round" fanout-nodes-relay fanout --subscribers "$NODES_SUBS" --senders 10 --rate "$NODES_RATE" \
      --senders-on-first-node --duration "$NODES_SECS" --warmup 3 --drain 20 --cluster-traffic
    scenario "$kind" "$round" fanout-nodes-courses fanout --subscribers "$NODES_SUBS" --courses 20 --senders 20 \
      --placement by-course --rate "$NODES_COURSES_RATE" --duration "$NODES_SECS" --warmup 3 --drain 20 --cluster-traffic
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $(basename "$(database "$kind" "$round")") WITH (FORCE)" >/dev/null || true
  done
done
echo "finished: $(date -u +%FT%TZ); load $(cat /proc/loadavg)" >>"$OUT/machine.txt"
rm -rf "$WORK"
log "results in $OUT"
python3 bench/summarize.py "$OUT" | tee "$OUT/summary.md"
