#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Replica sets when a replica stops (a benchmark, not a test: it asserts
# nothing). Two thread-service replicas share one sqlite file; everything
# talks over ipc:// in a temp dir.
#   1. rpc level, CONNS callers looping GetThread (5 s deadline each):
#      nng's own REQ spreading (one socket dialling both replicas) against
#      the replica-set client (common/rpc_client.c); SECS with both
#      replicas up, then SECS with replica 2 stopped (SIGSTOP).
#   2. HTTP level: dev IdP, 3 auth-service replicas, the gateway given both
#      lists; wrk -c CONNS GET /threads/{id}: SECS normal, SECS with thread
#      replica 2 stopped. wrk prints the longest request and non-2xx.
#   3. IdP calls per token: USERS users, 20 requests each alternating
#      between two gateways, then the dev IdP's user-endpoint count.
# Usage: bench/replica-bench.sh [seconds per phase, default 5]
# Knobs: CONNS (64), USERS (20), WRK_LUA (a wrk script, e.g. one printing
# more percentiles in done()), SHOW_WRK=1 (print wrk's whole output),
# KEEP=1 (keep the temp dir with every log).
# Needs: wrk, curl; a Release build in $BUILD (default <repo>/build-bench,
# built here if missing).
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
secs=${1:-5}
build=${BUILD:-$root/build-bench}
conns=${CONNS:-64}
users=${USERS:-20}

case $secs in '' | *[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 2; }

if [ ! -x "$build/rpc_replica" ] ||
	[ ! -x "$build/threadgate/gateway/threadgate-gateway" ]; then
	echo "building Release into $build ..." >&2
	cmake -S "$root/bench" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j2 --target rpc_replica threadgate-gateway \
		threadgate-auth threadgate-threads threadgate-dev-idp >/dev/null
fi
bin=$build/threadgate

tmp=$(mktemp -d)
pids=""
stopped=""
cleanup() {
	for p in $stopped; do kill -CONT "$p" 2>/dev/null || true; done
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	[ -n "${KEEP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

wait_file() { # path
	i=0
	while [ ! -s "$1" ]; do
		i=$((i + 1))
		[ $i -lt 3000 ] || { echo "timeout waiting for $1" >&2; exit 1; }
		sleep 0.01
	done
}

wait_sock() { # path
	i=0
	while [ ! -S "$1" ]; do
		i=$((i + 1))
		[ $i -lt 3000 ] || { echo "timeout waiting for $1" >&2; exit 1; }
		sleep 0.01
	done
}

json_field() { # name: first "name":"value" of stdin
	sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1
}

start_threads() { # n
	THREAD_SERVICE_URL=ipc://$tmp/threads$1.sock THREADS_DB=$tmp/threads.db \
		"$bin/thread-service/threadgate-threads" 2>>"$tmp/threads$1.log" &
	pids="$pids $!"
	eval "tpid$1=$!"
	wait_sock "$tmp/threads$1.sock"
}

export LOG_LEVEL=warn
echo "threadgate replica benchmark: $(nproc) cores, $conns callers, $secs s per phase, $(date -u +%FT%TZ)"
start_threads 1
start_threads 2
t1=ipc://$tmp/threads1.sock
t2=ipc://$tmp/threads2.sock

echo "1. rpc level, GetThread, replica 2 stopped in the second phase"
for mode in nng set; do
	"$build/rpc_replica" "$mode" "$t1" "$t2" "$tpid2" "$conns" "$secs" |
		sed 's/^/   /'
done

echo "2. HTTP level, GET /threads/{id} through the gateway"
DEV_IDP_PORT=0 DEV_IDP_PORT_FILE=$tmp/idp.port DEV_IDP_DB=$tmp/idp.db \
	"$bin/dev-idp/threadgate-dev-idp" 2>"$tmp/idp.log" &
pids="$pids $!"
wait_file "$tmp/idp.port"
idp="http://127.0.0.1:$(cat "$tmp/idp.port")"
auths=""
for a in 1 2 3; do
	AUTH_SERVICE_URL=ipc://$tmp/auth$a.sock SUPABASE_URL=$idp \
		SUPABASE_SERVICE_KEY=threadgate-dev-service-key \
		"$bin/auth-service/threadgate-auth" 2>"$tmp/auth$a.log" &
	pids="$pids $!"
	auths="$auths${auths:+,}ipc://$tmp/auth$a.sock"
done
# GATEWAY_AUTH_CACHE_TTL=0: every request reaches an auth replica, so the
# IdP calls per token show the replicas' affinity, not the gateway's cache.
for g in 1 2; do
	GATEWAY_PORT=0 GATEWAY_PORT_FILE=$tmp/gw$g.port GATEWAY_AUTH_CACHE_TTL=0 \
		AUTH_SERVICE_URL=$auths THREAD_SERVICE_URL="$t1,$t2" \
		"$bin/gateway/threadgate-gateway" 2>"$tmp/gw$g.log" &
	pids="$pids $!"
	wait_file "$tmp/gw$g.port"
done
gw1="http://127.0.0.1:$(cat "$tmp/gw1.port")"
gw2="http://127.0.0.1:$(cat "$tmp/gw2.port")"
signup() { # email -> token
	curl -sf -X POST "$idp/auth/v1/signup" -H 'apikey: threadgate-dev-anon-key' \
		-H 'Content-Type: application/json' \
		-d "{\"email\":\"$1\",\"password\":\"bench-password-1\"}" | json_field access_token
}
tok=$(signup "bench@example.test")
tid=$(curl -sf -X POST "$gw1/threads" -H "Authorization: Bearer $tok" -d '{}' |
	json_field thread_id)
[ -n "$tid" ] || { echo "create failed" >&2; exit 1; }
run_wrk() { # label
	wrk -t2 -c"$conns" -d"${secs}s" --latency ${WRK_LUA:+-s "$WRK_LUA"} \
		-H "Authorization: Bearer $tok" \
		"$gw1/threads/$tid" >"$tmp/wrk.out" 2>&1 || true
	rps=$(sed -n 's/^Requests\/sec: *//p' "$tmp/wrk.out")
	max=$(awk '/^    Latency/ {print $4}' "$tmp/wrk.out")
	p99=$(awk '/^ *99%/ {print $2}' "$tmp/wrk.out")
	bad=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' "$tmp/wrk.out")
	errs=$(sed -n 's/^ *Socket errors: *//p' "$tmp/wrk.out")
	[ -n "${SHOW_WRK:-}" ] && cat "$tmp/wrk.out" >&2
	printf '   %-28s req/s %9s  p99 %8s  longest %8s  non-2xx %s%s\n' \
		"$1" "$rps" "$p99" "$max" "${bad:-0}" "${errs:+  socket errors: $errs}"
}
run_wrk "both replicas"
kill -STOP "$tpid2"
stopped=$tpid2
run_wrk "thread replica 2 stopped"
kill -CONT "$tpid2"
stopped=""
run_wrk "replica 2 resumed"

echo "3. IdP calls per token, 3 auth replicas, 2 gateways, $users users x 20 requests"
before=$(curl -sf "$idp/auth/v1/_dev/stats" -H 'apikey: threadgate-dev-service-key' |
	sed -n 's/.*"user_requests": *\([0-9]*\).*/\1/p')
u=0
while [ $u -lt "$users" ]; do
	t=$(signup "user$u@example.test")
	i=0
	while [ $i -lt 10 ]; do
		curl -sf -o /dev/null "$gw1/threads/search" -H "Authorization: Bearer $t" -d '{}'
		curl -sf -o /dev/null "$gw2/threads/search" -H "Authorization: Bearer $t" -d '{}'
		i=$((i + 1))
	done
	u=$((u + 1))
done
after=$(curl -sf "$idp/auth/v1/_dev/stats" -H 'apikey: threadgate-dev-service-key' |
	sed -n 's/.*"user_requests": *\([0-9]*\).*/\1/p')
echo "   IdP /user calls: $((after - before)) for $users tokens ($(awk "BEGIN {printf \"%.2f\", ($after - $before) / $users}") per token)"
