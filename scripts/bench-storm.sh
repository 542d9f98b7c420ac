#!/usr/bin/env bash
# The login storm side by side (issue 17): the same U accounts x C contacts x P PEP nodes through
# a server whose PEP is stratus (delegation and privileges, as the README) and through the same
# server with its own PEP (Prosody mod_pep; ejabberd mod_pubsub with its pep plugin), the runs
# interleaved. Writes a markdown table to docs/benchmarks-storm-latest.md and keeps the raw
# JSON reports in bench-out/.
#   scripts/bench-storm.sh [U] [C] [P]          e.g. scripts/bench-storm.sh 1000 50 5
#   SERVERS=prosody REPEAT=5 scripts/bench-storm.sh 1000 50 5
#   PROSODY_GC=generational ...   both Prosody instances with `gc = { mode = "generational" }`
#                                 (Lua 5.4's generational collector; docs/benchmarks.md)
# Each run is two storms (--rounds 2): the first right after the accounts published (or, from the
# second repetition on, after the previous run), the second with every cache warm; the table
# gives each. Servers on CPU 0, stratus and the load tool on CPU 1 (as scripts/bench.sh).
source "$(dirname "$0")/bench-lib.sh" storm
U=${1:-1000}
C=${2:-50}
P=${3:-5}
REPEAT=${REPEAT:-5}
TIMEOUT=${TIMEOUT:-300}

"$root/scripts/xmpp-server.sh" install
cargo build --release --locked --bin stratus --bin stratus-load
table=$root/docs/benchmarks-storm-latest.md
{
  echo "# Login storm $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  machine_line
  echo "Command: ${PROSODY_GC:+PROSODY_GC=$PROSODY_GC }REPEAT=$REPEAT scripts/bench-storm.sh $U $C $P (U accounts, C mutual contacts each, P PEP nodes each with one item; every resource logs in at once with caps asking +notify for the P nodes; medians of $REPEAT interleaved runs)."
  echo
  echo "| server | PEP | storm | owed | delivered (min) | duplicates (max) | all logged in s | every last item s | per resource p50 ms | p99 ms | store reads | server CPU s | stratus CPU s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$table"

storm() { # name c2s server-pid [stratus-pid metrics]: one run
  local name=$1 c2s=$2 spid=$3 stratus=${4:-} metrics=${5:-}
  local extra=(--cpu-pid "server=$spid")
  [ -n "$stratus" ] && extra+=(--cpu-pid "stratus=$stratus" --metrics "$metrics")
  taskset -c 1 target/release/stratus-load --mode storm --server "127.0.0.1:$c2s" --users "$U" \
    --contacts "$C" --pep-nodes "$P" --rounds 2 --timeout "$TIMEOUT" --prefix "storm$U" \
    "${extra[@]}" --json "$out/$name.json" > "$out/$name.txt" 2>&1 || true
  echo "done $name" >&2
}

row() { # server label: one row per storm round, medians over the repetitions
  python3 - "$out" "$1" "$2" "$REPEAT" >> "$table" <<'PY'
import json, statistics, sys
out, server, label, reps = sys.argv[1:]
runs = []
for rep in range(1, int(reps) + 1):
    try:
        runs.append(json.load(open(f"{out}/storm-{server}-{label}-r{rep}.json")))
    except Exception:
        pass
if not runs:
    print(f"| {server} | {label} | - | failed ({reps} of {reps} runs) | | | | | | | | | |")
    sys.exit()
for i, name in enumerate(["first", "warm"]):
    rs = [r["rounds"][i] for r in runs if len(r["rounds"]) > i]
    med = lambda f: statistics.median(f(r) for r in rs)
    def opt(f):
        vals = [f(r) for r in rs if f(r) is not None]
        return f"{statistics.median(vals):.2f}" if len(vals) == len(rs) else f"- ({len(rs) - len(vals)} incomplete)"
    def cpu(n):
        vals = [c["cpu_s"] for r in rs for c in r["cpu"] if c["name"] == n]
        return f"{statistics.median(vals):.2f}" if vals else "-"
    reads = [r["storage_reads"] for r in rs if r["storage_reads"] is not None]
    print(f'| {server} | {label} | {name} | {rs[0]["expected"]} | {min(r["received"] for r in rs)} '
          f'| {max(r["duplicates"] for r in rs)} | {med(lambda r: r["logins_s"]):.2f} | {opt(lambda r: r["all_items_s"])} '
          f'| {med(lambda r: r["per_resource"]["p50_ms"]):.1f} | {med(lambda r: r["per_resource"]["p99_ms"]):.1f} '
          f'| {statistics.median(reads) if reads else "-"} | {cpu("server")} | {cpu("stratus")} |')
PY
}

for server in ${SERVERS:-prosody ejabberd}; do
  read -r c2s_s comp_s < <(start_server "$server" "$work/$server-stratus" --pep)
  read -r c2s_b _ < <(start_server "$server" "$work/$server-builtin" --builtin-pep)
  # The rosters straight into each server's storage, before anyone logs in: U x C entries made
  # through c2s take Prosody hours at C=50; the storm's setup then finds them all.
  target/release/stratus-load --mode storm --users "$U" --contacts "$C" --pep-nodes "$P" \
    --prefix "storm$U" --print-rosters > "$work/rosters.txt"
  for d in "$work/$server-stratus" "$work/$server-builtin"; do
    echo "rosters written into $d: $("$root/scripts/xmpp-server.sh" rosters "$d" "$work/rosters.txt") entries" >&2
  done
  http=127.0.0.1:$(free_port)
  taskset -c 1 target/release/stratus --server "127.0.0.1:$comp_s" --domain pubsub.localhost --secret secret \
    --data-dir "$work/store-$server" --http-listen "$http" --log-level warn > "$out/storm-stratus-$server.log" 2>&1 &
  pids+=($!) stratus_pid=$!
  sleep 1
  for rep in $(seq "$REPEAT"); do
    storm "storm-$server-stratus-r$rep" "$c2s_s" "$(cat "$work/$server-stratus/server.pid")" "$stratus_pid" "$http"
    storm "storm-$server-builtin-r$rep" "$c2s_b" "$(cat "$work/$server-builtin/server.pid")"
  done
  row "$server" stratus
  row "$server" builtin
  kill -TERM "$stratus_pid" 2>/dev/null || true
  "$root/scripts/xmpp-server.sh" stop "$work/$server-stratus" || true
  "$root/scripts/xmpp-server.sh" stop "$work/$server-builtin" || true
done
echo "results: $table" >&2
