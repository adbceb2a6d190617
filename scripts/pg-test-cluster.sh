#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# A throwaway PostgreSQL cluster for the tests: a real server, not a mock.
#
#   scripts/pg-test-cluster.sh start [STATE]    initdb + pg_ctl start
#   scripts/pg-test-cluster.sh stop [STATE]     stop the server, remove its files
#   scripts/pg-test-cluster.sh restart [STATE]  pg_ctl restart (same data, port)
#   scripts/pg-test-cluster.sh halt [STATE]     pg_ctl stop, keeping the data
#   scripts/pg-test-cluster.sh resume [STATE]   pg_ctl start after halt
#   scripts/pg-test-cluster.sh createdb [STATE] make a fresh database and print
#                                                its libpq target (a THREADS_DB
#                                                value) on stdout
#   scripts/pg-test-cluster.sh dropdb [STATE] NAME
#   scripts/pg-test-cluster.sh run [STATE] -- CMD [ARGS...]
#                                                CMD with a fresh database in
#                                                TG_TEST_THREADS_DB (dropped
#                                                afterwards); exit code of CMD
#   scripts/pg-test-cluster.sh env [STATE]      print the cluster's variables
#
# STATE is a directory for this script's bookkeeping (e.g. build/pg-test);
# without it, $TG_PG_STATE, else build-pg/ in this checkout (one manual
# cluster per checkout, apart from ctest's). The ctest fixture (cmake/TgPg.cmake) starts one
# cluster per ctest run and gives every PostgreSQL test TG_PG_STATE and
# TG_TEST_DB=pg; a test then makes its own databases with `createdb`, so
# tests are independent and run in parallel.
#
# The cluster lives in a new directory under ${TMPDIR:-/tmp} (short, so the
# unix socket path fits): initdb with trust authentication for the local
# superuser "postgres", no TCP listener (listen_addresses = ''), the unix
# socket in that directory on a random port number, and fsync, full-page
# writes and synchronous commit off: the data is disposable, so durability
# is traded for speed. PostgreSQL refuses to run as root, so when this
# script runs as root the server runs as the Debian package's "postgres"
# user, or as a system user "tgpgtest" created here when that is absent;
# otherwise it runs as the caller.
#
# Knobs: TG_PG_BINDIR (default: the newest /usr/lib/postgresql/*/bin),
# TG_KEEP_TMP=1 keeps the cluster files and test databases.
# Exit: 0 ok, 1 failure, 2 usage.
set -euo pipefail

# How long pg_ctl waits for start/stop, in seconds (a loaded 2-core CI
# machine with sanitizer builds running beside it can be slow).
PG_CTL_WAIT_S=120
# Connections the server admits: every thread-service process holds one
# per worker (13 by default) and tests run two at a time, some with two
# replicas each.
MAX_CONNECTIONS=300

usage() {
	sed -n '4,25p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

die() {
	printf 'pg-test-cluster: %s\n' "$*" >&2
	exit 1
}

bindir() {
	local d
	if [ -n "${TG_PG_BINDIR:-}" ]; then
		d=$TG_PG_BINDIR
	else
		d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
	fi
	[ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] ||
		die "no PostgreSQL server binaries (initdb, pg_ctl) found; install Debian's postgresql package (scripts/deps.sh --test) or set TG_PG_BINDIR"
	printf '%s\n' "$d"
}

# The user the server runs as (see the header).
server_user() {
	if [ "$(id -u)" -ne 0 ]; then
		id -un
	elif id -u postgres >/dev/null 2>&1; then
		echo postgres
	else
		if ! id -u tgpgtest >/dev/null 2>&1; then
			useradd --system --no-create-home --shell /usr/sbin/nologin tgpgtest ||
				die "cannot create the user tgpgtest to run PostgreSQL as"
		fi
		echo tgpgtest
	fi
}

# as_server CMD...: run CMD as the server user, from the cluster's
# directory (the caller's working directory, e.g. a checkout under /root,
# may be closed to that user).
as_server() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd "${PG_DIR:-/}" && runuser -u "$PGUSER_OS" -- "$@")
	else
		"$@"
	fi
}

load_state() {
	local state=$1
	[ -f "$state/cluster.env" ] || die "no cluster recorded in $state (run: $0 start $state)"
	# shellcheck disable=SC1091
	. "$state/cluster.env"
}

# psql_admin SQL: run one statement as the superuser on the postgres db.
psql_admin() {
	"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" \
		-U postgres -d postgres -c "$1" >/dev/null
}

cmd_start() {
	local state=$1 bin user dir port tmp
	mkdir -p "$state"
	if [ -f "$state/cluster.env" ]; then
		# A previous run was interrupted before its cleanup: stop it.
		cmd_stop "$state" || true
		mkdir -p "$state"
	fi
	bin=$(bindir)
	user=$(server_user)
	PGUSER_OS=$user
	tmp=${TMPDIR:-/tmp}
	# A unix socket path holds at most 107 bytes:
	# <tmp>/tg-pg-XXXXXX/.s.PGSQL.<port> must fit.
	[ "${#tmp}" -le 60 ] || tmp=/tmp
	dir=$(mktemp -d "$tmp/tg-pg-XXXXXX")
	PG_DIR=$dir
	chmod 755 "$dir"
	[ "$(id -u)" -ne 0 ] || chown "$user" "$dir"
	# Any port number works: the server listens only on its unix socket in
	# the private directory, so nothing else can hold it.
	port=$((20000 + RANDOM % 40000))
	as_server "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
		--no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; die "initdb failed"; }
	cat >>"$dir/data/postgresql.conf" <<EOF
# pg-test-cluster.sh: a disposable test server
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
max_connections = $MAX_CONNECTIONS
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
log_min_messages = warning
log_min_error_statement = panic
EOF
	as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
		-t "$PG_CTL_WAIT_S" start >/dev/null ||
		{ cat "$dir/server.log" >&2 || true; die "pg_ctl start failed"; }
	cat >"$state/cluster.env" <<EOF
PG_BINDIR='$bin'
PG_DIR='$dir'
PG_SOCKDIR='$dir'
PG_PORT='$port'
PGUSER_OS='$user'
EOF
	echo "pg-test-cluster: PostgreSQL $("$bin/postgres" --version | sed -E "s/^[^0-9]*([0-9.]+).*/\1/") running as $user in $dir (socket port $port)"
}

cmd_stop() {
	local state=$1
	load_state "$state"
	if [ -d "$PG_DIR/data" ]; then
		as_server "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m fast -w \
			-t "$PG_CTL_WAIT_S" stop >/dev/null 2>&1 ||
			as_server "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate \
				-w stop >/dev/null 2>&1 || true
	fi
	if [ "${TG_KEEP_TMP:-}" = "1" ]; then
		echo "pg-test-cluster: keeping $PG_DIR"
	else
		rm -rf "$PG_DIR"
	fi
	rm -f "$state/cluster.env"
}

cmd_halt() {
	load_state "$1"
	as_server "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m fast -w \
		-t "$PG_CTL_WAIT_S" stop >/dev/null
}

cmd_resume() {
	load_state "$1"
	as_server "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
		-w -t "$PG_CTL_WAIT_S" start >/dev/null
}

cmd_restart() {
	load_state "$1"
	as_server "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
		-m fast -w -t "$PG_CTL_WAIT_S" restart >/dev/null
}

# target NAME: the libpq keyword string of database NAME.
target() {
	printf 'host=%s port=%s user=postgres dbname=%s\n' "$PG_SOCKDIR" "$PG_PORT" "$1"
}

cmd_createdb() {
	local name
	load_state "$1"
	name="tg_$(date +%s%N)_$$_$RANDOM"
	psql_admin "CREATE DATABASE $name" || die "CREATE DATABASE $name failed"
	target "$name"
}

cmd_dropdb() {
	load_state "$1"
	[[ "$2" =~ ^tg_[0-9_]+$ ]] || die "refusing to drop '$2' (not a test database)"
	if [ "${TG_KEEP_TMP:-}" = "1" ]; then
		echo "pg-test-cluster: keeping database $2" >&2
		return 0
	fi
	psql_admin "DROP DATABASE IF EXISTS $2 WITH (FORCE)"
}

cmd_run() {
	local state=$1 t name rc
	shift
	[ "${1:-}" = "--" ] && shift
	[ "$#" -gt 0 ] || usage
	t=$(cmd_createdb "$state")
	name=${t##*dbname=}
	rc=0
	TG_TEST_THREADS_DB=$t TG_PG_STATE=$state "$@" || rc=$?
	(cmd_dropdb "$state" "$name") || echo "pg-test-cluster: could not drop $name" >&2
	return "$rc"
}

cmd_env() {
	load_state "$1"
	printf 'PG_BINDIR=%s\nPG_DIR=%s\nPG_SOCKDIR=%s\nPG_PORT=%s\nPGUSER_OS=%s\n' \
		"$PG_BINDIR" "$PG_DIR" "$PG_SOCKDIR" "$PG_PORT" "$PGUSER_OS"
}

[ "$#" -ge 1 ] || usage
cmd=$1
shift
# STATE: the next argument unless it is "--" or (for dropdb) the last one.
state=${TG_PG_STATE:-$(cd "$(dirname "$0")/.." && pwd)/build-pg}
if [ "$#" -ge 1 ] && [ "$1" != "--" ] &&
	! { [ "$cmd" = dropdb ] && [ "$#" -eq 1 ]; }; then
	state=$1
	shift
fi
case "$cmd" in
start) cmd_start "$state" ;;
stop) cmd_stop "$state" ;;
halt) cmd_halt "$state" ;;
resume) cmd_resume "$state" ;;
restart) cmd_restart "$state" ;;
createdb) cmd_createdb "$state" ;;
dropdb) [ "$#" -eq 1 ] || usage; cmd_dropdb "$state" "$1" ;;
run) cmd_run "$state" "$@" ;;
env) cmd_env "$state" ;;
*) usage ;;
esac
