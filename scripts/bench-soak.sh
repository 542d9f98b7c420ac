#!/usr/bin/env bash
# The soak (issue 17): through each server, with the project's modules and PEP delegated as the
# README attaches it, first the maximum rate (closed loop, W=16, N subscribers), then a run of
# DURATION seconds open loop at PERCENT % of that rate. Resident memory of the server and of
# stratus, stratus's outbound queue and the latency are sampled every second and plotted in
# bench-out/soak-SERVER.html; the summary per window goes to docs/benchmarks-soak-latest.md.
#   scripts/bench-soak.sh [DURATION s] [N] [PERCENT]     e.g. scripts/bench-soak.sh 1800 100 70
#   SERVERS=prosody scripts/bench-soak.sh 1800
# Server on CPU 0, stratus and the load tool on CPU 1 (as scripts/bench.sh).
source "$(dirname "$0")/bench-lib.sh" soak
DURATION=${1:-1800}
N=${2:-100}
PERCENT=${3:-70}
WINDOW=${WINDOW:-300}

"$root/scripts/xmpp-server.sh" install
cargo build --release --locked --bin stratus --bin stratus-load
table=$root/docs/benchmarks-soak-latest.md
{
  echo "# Soak $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  machine_line
  echo "Command: scripts/bench-soak.sh $DURATION $N $PERCENT (one publisher, $N subscribers, 100-byte items; the maximum is a closed-loop run at W=16 just before; the soak runs open loop at $PERCENT % of it for $DURATION s)."
  echo
} > "$table"

for server in ${SERVERS:-prosody ejabberd}; do
  read -r c2s comp < <(start_server "$server" "$work/$server" --multicast --pep)
  http=127.0.0.1:$(free_port)
  taskset -c 1 target/release/stratus --server "127.0.0.1:$comp" --domain pubsub.localhost --secret secret \
    --data-dir "$work/store-$server" --http-listen "$http" --log-level warn > "$out/soak-stratus-$server.log" 2>&1 &
  pids+=($!) stratus_pid=$!
  sleep 1
  server_pid=$(cat "$work/$server/server.pid")
  common=(--server "127.0.0.1:$c2s" --service pubsub.localhost -N "$N" --prefix "soak$N"
    --cpu-pid "server=$server_pid" --cpu-pid "stratus=$stratus_pid" --metrics "$http" --drain 30)
  taskset -c 1 target/release/stratus-load --quiet "${common[@]}" --node "max-$server" -W 16 -M 2000 \
    --json "$out/soak-max-$server.json" > "$out/soak-max-$server.txt" 2>&1
  rate=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(round(r['publishes_per_s'] * $PERCENT / 100, 1))" "$out/soak-max-$server.json")
  echo "$server: maximum $(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['publishes_per_s'], 1))" "$out/soak-max-$server.json") publishes/s, soaking at $rate/s" >&2
  taskset -c 1 target/release/stratus-load --quiet "${common[@]}" --node "soak-$server" --rate "$rate" \
    -M 100000000 --duration "$DURATION" --json "$out/soak-$server.json" --html "$out/soak-$server.html" \
    > "$out/soak-$server.txt" 2>&1 || true
  python3 - "$out/soak-max-$server.json" "$out/soak-$server.json" "$server" "$WINDOW" >> "$table" <<'PY'
import json, statistics, sys
mx, soak, server, window = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], int(sys.argv[4])
n = soak["config"]["subscribers"]
print(f"## {server}\n")
print(f"Maximum: {mx['publishes_per_s']:.1f} publishes/s ({mx['notifications_per_s']:.0f} notifications/s, event p99 {mx['e2e']['p99_ms']:.1f} ms). "
      f"Soak: {soak['config']['rate']} publishes/s for {soak['elapsed_s']:.0f} s: {soak['published']} published, "
      f"{soak['notifications_received']} of {soak['notifications_expected']} notifications, {soak['lost']} lost, {soak['duplicates']} duplicated; "
      f"event p50 {soak['e2e']['p50_ms']:.2f} ms, p99 {soak['e2e']['p99_ms']:.2f} ms, max {soak['e2e']['max_ms']:.1f} ms.\n")
print("| window s | notifications | event p99 ms (median of seconds) | worst second's p99 ms | server RSS MiB (end) | stratus RSS MiB (end) | outbound queue max |")
print("|---|---|---|---|---|---|---|")
names = [name for name, _ in soak["config"]["cpu_pids"]]
tl, samples = soak["timeline"], soak["samples"]
end = max([s for s, *_ in tl] + [0])
for start in range(0, end + 1, window):
    secs = [row for row in tl if start <= row[0] < start + window]
    if not secs:
        continue
    p99s = [row[2] for row in secs if row[3]]
    win = [s for s in samples if start <= s["second"] < start + window]
    def rss(name):
        vals = [s["rss_kib"][names.index(name)] for s in win if name in names and s["rss_kib"][names.index(name)]]
        return f"{vals[-1] / 1024:.1f}" if vals else "-"
    q = max((s["outbound_queue"] or 0 for s in win), default="-")
    print(f"| {start}-{start + window} | {sum(row[3] for row in secs)} | {statistics.median(p99s):.2f} | {max(p99s):.2f} | {rss('server')} | {rss('stratus')} | {q} |")
print()
PY
  kill -TERM "$stratus_pid" 2>/dev/null || true
  "$root/scripts/xmpp-server.sh" stop "$work/$server" || true
done
echo "results: $table" >&2
