#!/usr/bin/env bash
# Installs and starts what Pulsaga needs on a fresh Debian machine (run as root), and exports the
# settings the tests and `pulsaga up` read. Safe to run again: it only does what is missing.
# Sourced by scripts/test.sh; can also be run alone.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v protoc >/dev/null || apt_install protobuf-compiler
command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust with rustup first" >&2; exit 1; }
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
command -v curl >/dev/null || apt_install curl
command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven

# Apache Pulsar: the official binary distribution from Maven Central, checked against the digest
# below and unpacked once into the cache. `pulsaga up`, `pulsaga serve broker` and the tests run
# its `bin/pulsar standalone` (messaging/src/broker.rs; the version is pinned there too).
pulsar_version=4.0.8
pulsar_sha512=65b769b10696cdfebf7fc5bcdc95dd663702e27051e616c1a13cb100e91279525be35352171befe7b0011176330aab29bd0a6c8a0f2f0646641af46d2e33cbd6
pulsar_cache=${XDG_CACHE_HOME:-$HOME/.cache}/pulsaga
export PULSAR_HOME=${PULSAR_HOME:-$pulsar_cache/apache-pulsar-$pulsar_version}
if [ ! -x "$PULSAR_HOME/bin/pulsar" ]; then
  mkdir -p "$pulsar_cache"
  tarball="$pulsar_cache/pulsar-server-distribution-$pulsar_version-bin.tar.gz"
  if [ ! -s "$tarball" ]; then
    echo "setup: fetching Apache Pulsar $pulsar_version from Maven Central (about 250 MB)" >&2
    mvn -q --batch-mode --strict-checksums dependency:copy \
      -Dartifact="org.apache.pulsar:pulsar-server-distribution:$pulsar_version:tar.gz:bin" \
      -DoutputDirectory="$pulsar_cache"
  fi
  echo "$pulsar_sha512  $tarball" | sha512sum --check --quiet - \
    || { echo "setup: $tarball does not match its SHA-512; delete it and run again" >&2; exit 1; }
  tar -xzf "$tarball" -C "$pulsar_cache"
  rm -f "$tarball"
  [ -x "$PULSAR_HOME/bin/pulsar" ] || { echo "setup: no bin/pulsar in $PULSAR_HOME" >&2; exit 1; }
fi

# PostgreSQL: use the server answering on 127.0.0.1:5432, else start or install Debian's.
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || { echo "setup: no PostgreSQL cluster found under /etc/postgresql" >&2; exit 1; }
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { echo "setup: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi
# A Debian install asks for a password on TCP; give the postgres role the one the URL carries,
# over the Unix socket (peer authentication). Under trust authentication it is ignored.
if ! PGPASSWORD=postgres psql -qAt -d postgres -c 'select 1' >/dev/null 2>&1; then
  su postgres -c "env -u PGHOST -u PGPORT -u PGUSER psql -qAt -c \"alter role postgres password 'postgres'\"" >/dev/null
fi
export DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}

# The project's Python tools live in .venv, pinned by scripts/requirements.txt.
if [ ! -x "$root/.venv/bin/python" ]; then python3 -m venv "$root/.venv"; fi
stamp="$root/.venv/.requirements"
if ! cmp -s "$root/scripts/requirements.txt" "$stamp"; then
  "$root/.venv/bin/pip" install -q --disable-pip-version-check -r "$root/scripts/requirements.txt"
  cp "$root/scripts/requirements.txt" "$stamp"
fi
export PULSAGA_PYTHON="$root/.venv/bin/python"

# The console's browser tests (tests/browser): Debian's Chromium, which Playwright drives (it
# cannot download a browser here), and the npm packages pinned by package-lock.json.
command -v chromium >/dev/null || apt_install chromium
command -v npm >/dev/null || apt_install npm
export PULSAGA_CHROMIUM=${PULSAGA_CHROMIUM:-$(command -v chromium)}
stamp="$root/tests/browser/node_modules/.pulsaga-lock"
if ! cmp -s "$root/tests/browser/package-lock.json" "$stamp"; then
  (cd "$root/tests/browser" && npm ci --silent --no-audit --no-fund)
  cp "$root/tests/browser/package-lock.json" "$stamp"
fi
