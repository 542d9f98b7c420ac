#!/usr/bin/env bash
# Builds the Debian package and checks it installs: the test command runs this after the tests.
#   scripts/package.sh            build target/debian/stratus_*.deb (release profile), nothing else
#   scripts/package.sh --check    build it from the test build (dev profile, no rebuild), then
#                                 dpkg -i it on this machine, check what it installed, and purge it
# Needs cargo-deb (installed here when missing) and, for --check, root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || {
  echo "installing cargo-deb (Debian packages from Cargo.toml's [package.metadata.deb])" >&2
  cargo install --locked "cargo-deb@^3"
}

if [ "${1:-}" != "--check" ]; then
  exec cargo deb --locked -p stratus
fi

fail() { echo "package.sh: $*" >&2; exit 1; }
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || fail "installing the package needs root or sudo"
  sudo=sudo
fi
if dpkg -s stratus >/dev/null 2>&1; then
  fail "a stratus package is already installed here; the check would replace it (dpkg -r stratus first)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/stratus-package.XXXXXX")
trap 'rm -rf "$work"; $sudo dpkg --purge stratus >/dev/null 2>&1 || true' EXIT
cargo build --locked --bin stratus
# The test build's binary, packaged as a release would be (stripped): the same files and scripts.
cargo deb --no-build --profile dev --fast -o "$work/" 2>&1 | grep -v "dev profile\|debug symbols\|^ " || true
deb=$(ls "$work"/stratus_*.deb)

$sudo dpkg -i "$deb"
[ -x /usr/bin/stratus ] || fail "/usr/bin/stratus is not installed"
getent passwd stratus >/dev/null || fail "the stratus system user was not created"
[ "$(stat -c %U /var/lib/stratus)" = stratus ] || fail "/var/lib/stratus is not owned by stratus"
[ "$(stat -c %a:%G /etc/stratus/stratus.toml)" = 640:stratus ] \
  || fail "/etc/stratus/stratus.toml is $(stat -c %a:%G /etc/stratus/stratus.toml), not 640:stratus"
grep -q '^Type=notify' /usr/lib/systemd/system/stratus.service || fail "the systemd unit is missing"
dpkg-query -W -f='${Conffiles}\n' stratus | grep -q /etc/stratus/stratus.toml \
  || fail "/etc/stratus/stratus.toml is not a conffile (an upgrade would overwrite the operator's edits)"
# The configuration as shipped is valid and readable by the user the unit runs as.
$sudo runuser -u stratus -- /usr/bin/stratus --config /etc/stratus/stratus.toml \
  --data-dir /var/lib/stratus --check-config >/dev/null || fail "--check-config failed as user stratus"

$sudo dpkg --purge stratus >/dev/null
! getent passwd stratus >/dev/null || fail "purge left the stratus user"
[ ! -e /var/lib/stratus ] || fail "purge left /var/lib/stratus"
echo "package.sh: $(basename "$deb") installs, passes --check-config as user stratus, and purges cleanly"
