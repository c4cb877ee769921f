#!/usr/bin/env bash
# The project-local PostgreSQL for development: data under .local/postgres (git-ignored),
# listening on 127.0.0.1 only, trust auth, database testdriven_dev (the guide's name).
#   scripts/local-db.sh start     create on first use, start if stopped (idempotent)
#   scripts/local-db.sh stop      stop the server (data is kept)
#   scripts/local-db.sh status    running or not, and the URI
#   scripts/local-db.sh uri       print the connection URI
#   scripts/local-db.sh destroy   stop and delete all local data
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` OS user
# (LOCAL_PG_OS_USER to choose another). LOCAL_PG_PORT picks the port at creation (default 54329);
# LOCAL_PG_DIR moves the state directory (run-migrations.sh --environment local honours it too).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${LOCAL_PG_DIR:-$root/.local/postgres}"
data="$state/data"
database=testdriven_dev

find_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  if command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return; fi
  echo "local-db: PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql or set PG_BINDIR" >&2
  exit 1
}
bindir=$(find_bindir)

as_server_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "${LOCAL_PG_OS_USER:-postgres}" -- "$@"
  else
    "$@"
  fi
}

port() { cat "$state/port"; }
uri() { echo "postgresql://postgres@127.0.0.1:$(port)/$database"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

create() {
  mkdir -p "$state"
  local p="${LOCAL_PG_PORT:-54329}" tries=0
  while ! port_free "$p"; do
    p=$((p + 1)); tries=$((tries + 1))
    [ "$tries" -lt 50 ] || { echo "local-db: no free port near ${LOCAL_PG_PORT:-54329}" >&2; exit 1; }
  done
  if [ "$(id -u)" = 0 ]; then
    local user="${LOCAL_PG_OS_USER:-postgres}"
    id "$user" >/dev/null 2>&1 || { echo "local-db: running as root needs an OS user '$user' for the server (LOCAL_PG_OS_USER)" >&2; exit 1; }
    chown "$user" "$state"
    if ! runuser -u "$user" -- test -w "$state"; then
      echo "local-db: the server user '$user' cannot reach $state (a parent directory is private);" \
           "move the project somewhere '$user' can read, or run as a normal user" >&2
      exit 1
    fi
  fi
  echo "🐘 Creating the local PostgreSQL in $data (port $p)"
  as_server_user "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >"$state/initdb.log" 2>&1 \
    || { cat "$state/initdb.log" >&2; exit 1; }
  echo "$p" > "$state/port"
}

running() { [ -f "$data/postmaster.pid" ] && as_server_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  [ -f "$data/PG_VERSION" ] || create
  if ! running; then
    as_server_user "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$(port) -c unix_socket_directories=''" start >/dev/null \
      || { tail -n 20 "$data/server.log" >&2; exit 1; }
  fi
  if [ -z "$("$bindir/psql" -X -q -h 127.0.0.1 -p "$(port)" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
    "$bindir/psql" -X -q -h 127.0.0.1 -p "$(port)" -U postgres -d postgres -c "CREATE DATABASE $database"
  fi
  echo "🐘 Local PostgreSQL running: $(uri)"
}

stop() {
  if [ -f "$data/PG_VERSION" ] && running; then
    as_server_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo "🐘 Local PostgreSQL stopped (data kept in $data)"
  else
    echo "🐘 Local PostgreSQL is not running"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if [ -f "$data/PG_VERSION" ] && running; then echo "🐘 running: $(uri)"; else echo "🐘 not running"; exit 3; fi ;;
  uri) [ -f "$state/port" ] || { echo "local-db: not created yet; run scripts/local-db.sh start" >&2; exit 1; }; uri ;;
  destroy) stop; rm -rf "$state"; echo "🐘 Local PostgreSQL data deleted" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
