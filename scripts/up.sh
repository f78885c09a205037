#!/usr/bin/env bash
# The platform and its demo from one command: sets up what is missing (scripts/setup.sh), builds
# the release binary, then runs `pulsaga up --demo` until Ctrl-C. The development JWT secret is
# kept in .pulsaga/jwt-secret, so tokens printed by one run still work in the next.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/setup.sh

mkdir -p .pulsaga
if [ -z "${JWT_SECRET:-}" ]; then
  [ -s .pulsaga/jwt-secret ] || head -c 48 /dev/urandom | base64 -w0 > .pulsaga/jwt-secret
  JWT_SECRET=$(cat .pulsaga/jwt-secret)
  export JWT_SECRET
fi
cargo build --release --locked -p pulsaga
exec target/release/pulsaga up --demo "$@"
