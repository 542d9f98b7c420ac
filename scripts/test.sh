#!/usr/bin/env bash
# The test command: installs what is missing, starts private Prosody and ejabberd instances,
# runs every test (unit, integration against the real servers, fake-server), stops the servers.
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

"$root/scripts/xmpp-server.sh" install
command -v cargo >/dev/null || { echo "test.sh: cargo is required (rustup)" >&2; exit 1; }
# A local server speaking S3 and DynamoDB for the aws backend's conformance suite.
if ! python3 -c "import moto.server, flask" 2>/dev/null; then
  echo "installing moto (local S3 + DynamoDB)" >&2
  python3 -m pip install --quiet 'moto[server]'
fi
# DynamoDB Local (AWS's own implementation) for the aws backend with separate S3 and DynamoDB servers.
"$root/scripts/dynamodb-local.sh" install

work=$(mktemp -d "${TMPDIR:-/tmp}/stratus-test.XXXXXX")
cleanup() {
  [ -n "${moto_pid:-}" ] && kill "$moto_pid" 2>/dev/null || true
  [ -n "${ddb_pid:-}" ] && kill "$ddb_pid" 2>/dev/null || true
  "$root/scripts/xmpp-server.sh" stop "$work/prosody" || true
  "$root/scripts/xmpp-server.sh" stop "$work/ejabberd" || true
  rm -rf "$work"
}
trap cleanup EXIT

# Seven different free ports at once (each probe stays bound until all are chosen, so none repeats).
read -r P_C2S P_COMP E_C2S E_COMP E_DIST MOTO DDB < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
"$root/scripts/xmpp-server.sh" start prosody "$work/prosody" "$P_C2S" "$P_COMP" --watch-pid $$
"$root/scripts/xmpp-server.sh" start ejabberd "$work/ejabberd" "$E_C2S" "$E_COMP" "$E_DIST" --watch-pid $$
# DynamoDB requests one at a time, as DynamoDB isolates transactions (see the script).
"$root/scripts/moto-server.py" -H 127.0.0.1 -p "$MOTO" > "$work/moto.log" 2>&1 &
moto_pid=$!
ddb_pid=$("$root/scripts/dynamodb-local.sh" start "$DDB" "$work/dynamodb-local.log")
for port in "$MOTO" "$DDB"; do
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
done
export STRATUS_TEST_AWS_ENDPOINT=http://127.0.0.1:$MOTO AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export STRATUS_TEST_PROSODY_C2S=$P_C2S STRATUS_TEST_PROSODY_COMPONENT=$P_COMP
export STRATUS_TEST_EJABBERD_C2S=$E_C2S STRATUS_TEST_EJABBERD_COMPONENT=$E_COMP

cargo test --locked --no-fail-fast "$@"
# The scale bench at 1/100 of its size, its counts checked (never its speed).
cargo test --locked --no-fail-fast --bench scale "$@"
# The XEP-0060 and durability tests again, with stratus storing into S3 + DynamoDB.
STRATUS_TEST_STORAGE=aws cargo test --locked --no-fail-fast --test pubsub --test durability "$@"
# The aws backend on two servers, as with MinIO or Garage beside DynamoDB: the table in DynamoDB
# Local ([storage.aws] dynamodb_endpoint), the items in moto's S3 (endpoint).
export STRATUS_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:$DDB
cargo test --locked --no-fail-fast --lib storage::conformance::tests::aws "$@"
STRATUS_TEST_STORAGE=aws cargo test --locked --no-fail-fast --test pubsub --test readme "$@"
unset STRATUS_TEST_DYNAMODB_ENDPOINT
# The Debian package: built from the test build, installed with dpkg -i, checked, purged.
"$root/scripts/package.sh" --check
