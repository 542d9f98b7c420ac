#!/usr/bin/env bash
# Side by side: the same load against stratus, against the server's built-in pubsub, and against
# the server's raw routing (direct messages), through private Prosody and ejabberd instances.
# Writes a markdown table to docs/benchmarks-latest.md (and JSON/HTML reports to bench-out/).
#   scripts/bench.sh [N list] [W list] [items]     e.g. scripts/bench.sh "1 10 100 1000" "1 16" 200
#   SERVERS=ejabberd scripts/bench.sh "100" "16" 200     (one server only; default both)
# Prosody loads contrib/prosody/mod_stratus_multicast.lua (XEP-0033); "stratus-unicast" is a second
# stratus with multicast off, as on a Prosody without it.
# Server pinned to CPU 0, load tool to CPU 1; stratus to CPU $STRATUS_CPU (default 1: the server
# keeps CPU 0 to itself, as its built-in pubsub has it; STRATUS_CPU=0 makes them share it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
NS=${1:-"1 10 100 1000"}
WS=${2:-"1 16"}
M=${3:-200}
STRATUS_CPU=${STRATUS_CPU:-1}

"$root/scripts/xmpp-server.sh" install
cargo build --release --locked --bin stratus --bin stratus-load
out=$root/bench-out
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/stratus-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  "$root/scripts/xmpp-server.sh" stop "$work/prosody" || true
  "$root/scripts/xmpp-server.sh" stop "$work/ejabberd" || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

table=$root/docs/benchmarks-latest.md
mkdir -p "$root/docs"
{
  echo "# Side-by-side run $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null); ejabberd $(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null); stratus $(git rev-parse --short HEAD)."
  echo "Command: STRATUS_CPU=$STRATUS_CPU scripts/bench.sh \"$NS\" \"$WS\" $M (one publisher, $M items of 100 bytes, subscribers on full JIDs)."
  echo "Placement: server on CPU 0, load tool on CPU 1, stratus on CPU $STRATUS_CPU."
  echo
  echo "CPU columns: microseconds of CPU per notification, from the first publish to the last notification, of the XMPP server process and of the stratus process (stratus-load --cpu-pid)."
  echo
  echo "| server | service | W | N | ack p50 ms | ack p99 ms | event p50 ms | event p90 ms | event p99 ms | event max ms | publishes/s | notifications/s | lost | server CPU us/notif | stratus CPU us/notif |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$table"

run() { # server c2s service-label service mode N W [stratus-pid]
  local server=$1 c2s=$2 label=$3 service=$4 mode=$5 n=$6 w=$7 spid=${8:-}
  local name="$server-$label-N$n-W$w"
  local cpu=(--cpu-pid "server=$(cat "$work/$server/server.pid")")
  [ -n "$spid" ] && cpu+=(--cpu-pid "stratus=$spid")
  if taskset -c 1 target/release/stratus-load --quiet "${cpu[@]}" --server "127.0.0.1:$c2s" --service "$service" \
      --node "bench-$label-$n-$w" --mode "$mode" -N "$n" -W "$w" -M "$M" --prefix "b$n" \
      --json "$out/$name.json" --html "$out/$name.html" --drain 30 > "$out/$name.txt" 2>&1; then :; fi
  python3 - "$out/$name.json" "$server" "$label" "$w" "$n" >> "$table" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {sys.argv[5]} | failed | | | | | | | | | | |"); sys.exit()
a, e = r["ack"], r["e2e"]
ack50 = f'{a["p50_ms"]:.2f}' if a["count"] else "-"
ack99 = f'{a["p99_ms"]:.2f}' if a["count"] else "-"
cpu = {c["name"]: f'{c["us_per_notification"]:.1f}' for c in r.get("cpu", [])}
print(f'| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {sys.argv[5]} | {ack50} | {ack99} | {e["p50_ms"]:.2f} | {e["p90_ms"]:.2f} | {e["p99_ms"]:.2f} | {e["max_ms"]:.2f} | {r["publishes_per_s"]:.0f} | {r["notifications_per_s"]:.0f} | {r["lost"]} | {cpu.get("server", "-")} | {cpu.get("stratus", "-")} |')
PY
  echo "done $name" >&2
}

for server in ${SERVERS:-prosody ejabberd}; do
  c2s=$(free_port) comp=$(free_port)
  if [ $server = prosody ]; then
    taskset -c 0 "$root/scripts/xmpp-server.sh" start prosody "$work/prosody" "$c2s" "$comp" --multicast --watch-pid $$
  else
    taskset -c 0 "$root/scripts/xmpp-server.sh" start ejabberd "$work/ejabberd" "$c2s" "$comp" "$(free_port)" --builtin-pubsub --watch-pid $$
  fi
  taskset -c "$STRATUS_CPU" target/release/stratus --server "127.0.0.1:$comp" --domain pubsub.localhost --secret secret \
    --data-dir "$work/store-$server" --log-level warn > "$out/stratus-$server.log" 2>&1 &
  pids+=($!) stratus_pid=$!
  if [ $server = prosody ]; then
    # The same without XEP-0033 (one stanza per subscriber), as on a Prosody without the module.
    printf '[pubsub]\nmulticast = false\n' > "$work/unicast.toml"
    taskset -c "$STRATUS_CPU" target/release/stratus --config "$work/unicast.toml" --server "127.0.0.1:$comp" \
      --domain ps01.localhost --secret secret --data-dir "$work/store-unicast" --log-level warn \
      > "$out/stratus-unicast-$server.log" 2>&1 &
    pids+=($!) unicast_pid=$!
  fi
  sleep 1
  for w in $WS; do
    for n in $NS; do
      run $server "$c2s" stratus pubsub.localhost pubsub "$n" "$w" "$stratus_pid"
      if [ $server = prosody ]; then run $server "$c2s" stratus-unicast ps01.localhost pubsub "$n" "$w" "$unicast_pid"; fi
      run $server "$c2s" builtin pubsub-builtin.localhost pubsub "$n" "$w"
      run $server "$c2s" raw - raw "$n" "$w"
    done
  done
done
echo "results: $table" >&2
