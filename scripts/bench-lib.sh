# Shared by the benchmark scripts (sourced, not run): a private work directory removed on exit
# with every server and process started in it, a free port, and a server on CPU 0.
#   source "$(dirname "$0")/bench-lib.sh" NAME     (sets root, work, out; cds to the repository)
# Processes appended to the array `pids` are sent SIGTERM on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
out=$root/bench-out
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/stratus-${1:-bench}.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for d in "$work"/*/; do [ -f "$d/server.pid" ] && "$root/scripts/xmpp-server.sh" stop "$d" || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # kind dir flags...: a private server on CPU 0; prints "c2s component-port"
  local kind=$1 dir=$2; shift 2
  local c2s comp
  c2s=$(free_port) comp=$(free_port)
  if [ "$kind" = prosody ]; then
    taskset -c 0 "$root/scripts/xmpp-server.sh" start prosody "$dir" "$c2s" "$comp" "$@" --watch-pid $$ >&2
  else
    taskset -c 0 "$root/scripts/xmpp-server.sh" start ejabberd "$dir" "$c2s" "$comp" "$(free_port)" "$@" --watch-pid $$ >&2
  fi
  echo "$c2s $comp"
}

machine_line() { # the table's machine line
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null); ejabberd $(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null); stratus $(git rev-parse --short HEAD)."
}
