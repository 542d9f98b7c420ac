#!/usr/bin/env bash
# Side by side: the same load against stratus, against the server's built-in pubsub, and against
# the server's raw routing (direct messages), through private Prosody and ejabberd instances.
# Writes a markdown table to docs/benchmarks-latest.md (and JSON/HTML reports to bench-out/).
#   scripts/bench.sh [N list] [W list] [items]     e.g. scripts/bench.sh "1 10 100 1000" "1 16" 200
#   SERVERS=ejabberd scripts/bench.sh "100" "16" 200     (one server only; default both)
#   REPEAT=5 scripts/bench.sh "100" "16" 200             (each cell the median of 5 interleaved runs)
# Both servers load the project's XEP-0033 module (contrib/prosody, contrib/ejabberd); on Prosody,
# "stratus-unicast" is a second stratus with multicast off, as on a Prosody without the module.
#   MODULES=0 scripts/bench.sh "100 1000" "16" 200      unchanged servers (no project module):
#     Prosody as packaged; ejabberd with its stock mod_multicast, which "stratus" finds and uses,
#     and "stratus-unicast" (multicast off), as on an ejabberd without mod_multicast. Written to
#     docs/benchmarks-unchanged-latest.md.
#   RAW_MINIMAL=1 adds "raw-min": raw routing of a minimal message (fewer elements and bytes than
#     a notification), which prices the server's parsing by difference.
# "raw" sends each subscriber the notification a pubsub service would (stratus-load
# --raw-message notification): the ceiling for anything outside the server.
# Server pinned to CPU 0, load tool to CPU 1; stratus to CPU $STRATUS_CPU (default 1: the server
# keeps CPU 0 to itself, as its built-in pubsub has it; STRATUS_CPU=0 makes them share it).
source "$(dirname "$0")/bench-lib.sh" bench
NS=${1:-"1 10 100 1000"}
WS=${2:-"1 16"}
M=${3:-200}
STRATUS_CPU=${STRATUS_CPU:-1}
REPEAT=${REPEAT:-1}
MODULES=${MODULES:-1}
RAW_MINIMAL=${RAW_MINIMAL:-0}

"$root/scripts/xmpp-server.sh" install
cargo build --release --locked --bin stratus --bin stratus-load
if [ "$MODULES" = 1 ]; then
  table=$root/docs/benchmarks-latest.md tag="" multicast=(--multicast)
else
  table=$root/docs/benchmarks-unchanged-latest.md tag="un-" multicast=()
fi
{
  echo "# Side-by-side run $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  machine_line
  echo "Command: MODULES=$MODULES RAW_MINIMAL=$RAW_MINIMAL STRATUS_CPU=$STRATUS_CPU REPEAT=$REPEAT scripts/bench.sh \"$NS\" \"$WS\" $M (one publisher, $M items of 100 bytes, subscribers on full JIDs; each cell is the median of $REPEAT run(s), the services' runs interleaved, each on a fresh node; lost is the sum)."
  echo "Placement: server on CPU 0, load tool on CPU 1, stratus on CPU $STRATUS_CPU."
  if [ "$MODULES" = 1 ]; then
    echo "Servers: with the project's XEP-0033 module (contrib/); stratus-unicast is stratus with multicast off."
  else
    echo "Servers: unchanged (no project module; ejabberd with its stock mod_multicast, which stratus uses; stratus-unicast is stratus with multicast off, as without mod_multicast)."
  fi
  echo
  echo "CPU columns: microseconds of CPU per notification, from the first publish to the last notification, of the XMPP server process and of the stratus process (stratus-load --cpu-pid). Bytes to the server: what the publisher and stratus wrote to it per notification delivered; stanzas per publish and per socket write: stratus's (its metrics, stratus-load --metrics)."
  echo
  echo "| server | service | W | N | ack p50 ms | ack p99 ms | event p50 ms | event p90 ms | event p99 ms | event max ms | publishes/s | notifications/s | lost | server CPU us/notif | stratus CPU us/notif | bytes to the server per notif | stratus stanzas per publish | stanzas per write |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$table"

run() { # server c2s service-label service mode N W rep [stratus-pid stratus-metrics]: one measurement
  local server=$1 c2s=$2 label=$3 service=$4 mode=$5 n=$6 w=$7 rep=$8 spid=${9:-} metrics=${10:-}
  local name="$tag$server-$label-N$n-W$w-r$rep" shape=notification
  [ "$label" = raw-min ] && shape=minimal
  local cpu=(--cpu-pid "server=$(cat "$work/$server/server.pid")")
  [ -n "$spid" ] && cpu+=(--cpu-pid "stratus=$spid" --metrics "$metrics")
  if taskset -c 1 target/release/stratus-load --quiet "${cpu[@]}" --server "127.0.0.1:$c2s" --service "$service" \
      --node "bench-$label-$n-$w-$rep" --mode "$mode" --raw-message "$shape" -N "$n" -W "$w" -M "$M" --prefix "b$n" \
      --json "$out/$name.json" --html "$out/$name.html" --drain 30 > "$out/$name.txt" 2>&1; then :; fi
  echo "done $name" >&2
}

row() { # server service-label N W: the table row, each column the median of the repetitions
  python3 - "$out" "$1" "$2" "$3" "$4" "$REPEAT" "$tag" >> "$table" <<'PY'
import json, statistics, sys
out, server, label, n, w, reps, tag = sys.argv[1:]
runs = []
for rep in range(1, int(reps) + 1):
    try:
        runs.append(json.load(open(f"{out}/{tag}{server}-{label}-N{n}-W{w}-r{rep}.json")))
    except Exception:
        pass
if len(runs) < int(reps):
    print(f"| {server} | {label} | {w} | {n} | failed ({int(reps) - len(runs)} of {reps} runs) | | | | | | | | | | | | | |")
    sys.exit()
med = lambda f: statistics.median(f(r) for r in runs)
acked = all(r["ack"]["count"] for r in runs)
ack50 = f'{med(lambda r: r["ack"]["p50_ms"]):.2f}' if acked else "-"
ack99 = f'{med(lambda r: r["ack"]["p99_ms"]):.2f}' if acked else "-"
def cpu(name):
    vals = [c["us_per_notification"] for r in runs for c in r.get("cpu", []) if c["name"] == name]
    return f"{statistics.median(vals):.1f}" if len(vals) == len(runs) else "-"
e = lambda k: f'{med(lambda r: r["e2e"][k]):.2f}'
def traffic(k, fmt="{:.1f}"):
    vals = [r.get("traffic", {}).get(k) for r in runs]
    return fmt.format(statistics.median(vals)) if all(v is not None for v in vals) else "-"
into = [r["traffic"]["publisher_bytes_per_notification"] + (r["traffic"]["stratus_bytes_per_notification"] or 0) for r in runs if "traffic" in r]
into = f"{statistics.median(into):.0f}" if len(into) == len(runs) else "-"
print(f'| {server} | {label} | {w} | {n} | {ack50} | {ack99} | {e("p50_ms")} | {e("p90_ms")} | {e("p99_ms")} | {e("max_ms")} '
      f'| {med(lambda r: r["publishes_per_s"]):.0f} | {med(lambda r: r["notifications_per_s"]):.0f} '
      f'| {sum(r["lost"] for r in runs)} | {cpu("server")} | {cpu("stratus")} | {into} '
      f'| {traffic("stratus_stanzas_per_publish", "{:.2f}")} | {traffic("stratus_stanzas_per_write")} |')
PY
}

for server in ${SERVERS:-prosody ejabberd}; do
  if [ $server = prosody ]; then
    read -r c2s comp < <(start_server prosody "$work/prosody" "${multicast[@]}")
  else
    read -r c2s comp < <(start_server ejabberd "$work/ejabberd" --builtin-pubsub "${multicast[@]}")
  fi
  # The second stratus, multicast off: Prosody without the module; ejabberd, unchanged, without
  # mod_multicast.
  unicast=0
  { [ $server = prosody ] || [ "$MODULES" = 0 ]; } && unicast=1
  http=127.0.0.1:$(free_port) http_unicast=127.0.0.1:$(free_port)
  taskset -c "$STRATUS_CPU" target/release/stratus --server "127.0.0.1:$comp" --domain pubsub.localhost --secret secret \
    --data-dir "$work/store-$server" --http-listen "$http" --log-level warn > "$out/stratus-$server.log" 2>&1 &
  pids+=($!) stratus_pid=$!
  if [ $unicast = 1 ]; then
    printf '[pubsub]\nmulticast = false\n' > "$work/unicast.toml"
    taskset -c "$STRATUS_CPU" target/release/stratus --config "$work/unicast.toml" --server "127.0.0.1:$comp" \
      --domain ps01.localhost --secret secret --data-dir "$work/store-unicast-$server" --http-listen "$http_unicast" --log-level warn \
      > "$out/stratus-unicast-$server.log" 2>&1 &
    pids+=($!) unicast_pid=$!
  fi
  sleep 1
  for w in $WS; do
    for n in $NS; do
      # Repetitions interleaved, so that the VM's speed swings reach every service alike.
      for rep in $(seq "$REPEAT"); do
        run $server "$c2s" stratus pubsub.localhost pubsub "$n" "$w" "$rep" "$stratus_pid" "$http"
        if [ $unicast = 1 ]; then run $server "$c2s" stratus-unicast ps01.localhost pubsub "$n" "$w" "$rep" "$unicast_pid" "$http_unicast"; fi
        run $server "$c2s" builtin pubsub-builtin.localhost pubsub "$n" "$w" "$rep"
        run $server "$c2s" raw - raw "$n" "$w" "$rep"
        if [ "$RAW_MINIMAL" = 1 ]; then run $server "$c2s" raw-min - raw "$n" "$w" "$rep"; fi
      done
      row $server stratus "$n" "$w"
      if [ $unicast = 1 ]; then row $server stratus-unicast "$n" "$w"; fi
      row $server builtin "$n" "$w"
      row $server raw "$n" "$w"
      if [ "$RAW_MINIMAL" = 1 ]; then row $server raw-min "$n" "$w"; fi
    done
  done
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  pids=()
  "$root/scripts/xmpp-server.sh" stop "$work/$server" || true
done
echo "results: $table" >&2
