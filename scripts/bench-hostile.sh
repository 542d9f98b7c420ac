#!/usr/bin/env bash
# Memory under hostile input (issue 12): stratus's resident memory before and after 10,000
# hostile stanzas and two floods of random XEP-0115 caps hashes, through a private server with PEP
# delegated to stratus (Prosody and ejabberd in turn). Prints a markdown table per server.
#   scripts/bench-hostile.sh [stanzas] [caps hashes]      e.g. scripts/bench-hostile.sh 10000 20000
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
STANZAS=${1:-10000}
CAPS=${2:-20000}
"$root/scripts/xmpp-server.sh" install
cargo build --release --locked --bin stratus --example hostile_memory
work=$(mktemp -d "${TMPDIR:-/tmp}/stratus-hostile.XXXXXX")
spid=
cleanup() {
  [ -n "$spid" ] && kill -TERM "$spid" 2>/dev/null || true
  "$root/scripts/xmpp-server.sh" stop "$work/prosody" || true
  "$root/scripts/xmpp-server.sh" stop "$work/ejabberd" || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for server in prosody ejabberd; do
  c2s=$(free_port) comp=$(free_port)
  extra=()
  [ "$server" = ejabberd ] && extra=("$(free_port)")
  "$root/scripts/xmpp-server.sh" start "$server" "$work/$server" "$c2s" "$comp" "${extra[@]}" --pep --watch-pid $$
  target/release/stratus --server "127.0.0.1:$comp" --domain pubsub.localhost --secret secret \
    --storage memory --log-level info > "$work/$server-stratus.log" 2>&1 &
  spid=$!
  for _ in $(seq 100); do grep -q "connected to" "$work/$server-stratus.log" 2>/dev/null && break; sleep 0.1; done
  echo "## $server (stratus $(git rev-parse --short HEAD), $STANZAS stanzas, $CAPS caps hashes)"
  target/release/examples/hostile_memory "127.0.0.1:$c2s" "$spid" "$STANZAS" "$CAPS"
  reconnects=$(grep -c "reconnecting" "$work/$server-stratus.log" || true)
  echo "stratus reconnected $reconnects time(s)"
  kill -TERM "$spid"; wait "$spid" || true; spid=
  "$root/scripts/xmpp-server.sh" stop "$work/$server"
done
