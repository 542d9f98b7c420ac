#!/usr/bin/env bash
# The local demo: a private Prosody, stratus on its embedded store, and a client that publishes
# and receives an event. Everything lives in ./demo-data; stratus and Prosody keep running until
# Ctrl-C so you can connect your own client (c2s port printed below, users alice/bob, password
# demo-pass). `scripts/demo.sh --once` stops after the demo client.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
once=${1:-}

"$root/scripts/xmpp-server.sh" install
command -v cargo >/dev/null || { echo "demo.sh: cargo is required (rustup)" >&2; exit 1; }
cargo build --locked --bin stratus --example demo

data=$root/demo-data
mkdir -p "$data"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
C2S=$(free_port) COMP=$(free_port)
"$root/scripts/xmpp-server.sh" stop "$data/prosody" 2>/dev/null || true
"$root/scripts/xmpp-server.sh" start prosody "$data/prosody" "$C2S" "$COMP" --multicast --watch-pid $$

target/debug/stratus --server "127.0.0.1:$COMP" --domain pubsub.localhost --secret secret \
  --data-dir "$data/store" &
stratus_pid=$!
cleanup() {
  kill -TERM "$stratus_pid" 2>/dev/null || true
  wait "$stratus_pid" 2>/dev/null || true
  "$root/scripts/xmpp-server.sh" stop "$data/prosody" || true
}
trap cleanup EXIT

for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$COMP") 2>/dev/null && break; sleep 0.1; done
sleep 0.5
target/debug/examples/demo "127.0.0.1:$C2S" pubsub.localhost

echo
echo "stratus serves pubsub.localhost through Prosody at 127.0.0.1:$C2S (users alice, bob; password demo-pass)."
echo "Items are kept in $data/store."
if [ "$once" != --once ]; then
  echo "Ctrl-C stops stratus and Prosody."
  wait "$stratus_pid"
fi
