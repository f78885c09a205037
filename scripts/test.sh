#!/usr/bin/env bash
# The one test command: sets up what is missing, then runs the format check, clippy and the whole
# test suite against the real PostgreSQL and one Apache Pulsar standalone broker for the whole run
# (each test provisions a namespace of its own on it; the tests that kill a broker start theirs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked

# The run's broker, started by the binary under test, on free ports, with fresh data.
free_port() { "$PULSAGA_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
broker_data="$root/target/test-broker"
rm -rf "$broker_data"
mkdir -p "$broker_data"
export PULSAR_URL="pulsar://127.0.0.1:$(free_port)" PULSAR_ADMIN_URL="http://127.0.0.1:$(free_port)"
started=$(date +%s)
RUST_LOG=warn target/debug/pulsaga serve broker --data-dir "$broker_data" >"$broker_data/serve.log" 2>&1 &
broker_pid=$!
trap 'kill -TERM $broker_pid 2>/dev/null; wait $broker_pid 2>/dev/null || true' EXIT
until curl -sf "$PULSAR_ADMIN_URL/admin/v2/namespaces/public/default/schemaCompatibilityStrategy" | grep -q BACKWARD_TRANSITIVE; do
  kill -0 $broker_pid 2>/dev/null || { cat "$broker_data/serve.log" >&2; echo "test: the broker exited" >&2; exit 1; }
  [ $(($(date +%s) - started)) -lt 300 ] || { echo "test: the broker was not up within 5 minutes" >&2; exit 1; }
  sleep 1
done
echo "test: Apache Pulsar up at $PULSAR_URL after $(($(date +%s) - started)) s" >&2

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  # Without nextest (and its .config/nextest.toml), the tests that start a whole platform run one
  # at a time: side by side they would exhaust PostgreSQL's connections.
  cargo test --workspace --locked --no-fail-fast --exclude pulsaga --exclude pulsaga-tests
  cargo test --locked --no-fail-fast -p pulsaga -p pulsaga-tests -- --test-threads=1
fi
