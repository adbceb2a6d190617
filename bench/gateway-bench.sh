#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Throughput of the whole request path, next to a baseline measured in the
# same run on the same machine (a benchmark, not a test: it asserts
# nothing). It starts the real stack on loopback - dev IdP, auth-service
# (supabase mode, result cache on), thread-service (sqlite in a temp dir),
# gateway - signs up a user, creates a thread, and runs wrk against:
#   1. GET /ok                  HTTP only: the gateway's floor (baseline)
#   2. GET /threads/{id}        HTTP + Authenticate (cache hit) + GetThread
#                               (sqlite point read): the full chain
#   3. POST /threads/search     the chain with an owner-index query
# Usage: bench/gateway-bench.sh [seconds per run, default 10]
# Needs: wrk, curl, a build in $BUILD (default <repo>/build-rel, built
# Release here if missing).
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
secs=${1:-10}
build=${BUILD:-$root/build-rel}
conns=${CONNS:-64}

case $secs in '' | *[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 2; }

if [ ! -x "$build/gateway/threadgate-gateway" ]; then
	cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j2 --target threadgate-gateway \
	    threadgate-auth threadgate-threads threadgate-dev-idp >/dev/null
fi

tmp=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

wait_file() { # path
	i=0
	while [ ! -s "$1" ]; do
		i=$((i + 1)); [ $i -lt 500 ] || { echo "timeout waiting for $1" >&2; exit 1; }
		sleep 0.01
	done
}

export LOG_LEVEL=warn
DEV_IDP_PORT=0 DEV_IDP_PORT_FILE=$tmp/idp.port DEV_IDP_DB=$tmp/idp.db \
    "$build/dev-idp/threadgate-dev-idp" 2>"$tmp/idp.log" &
pids="$pids $!"
wait_file "$tmp/idp.port"
idp="http://127.0.0.1:$(cat "$tmp/idp.port")"

AUTH_SERVICE_URL=ipc://$tmp/auth.sock SUPABASE_URL=$idp \
    SUPABASE_SERVICE_KEY=threadgate-dev-service-key \
    "$build/auth-service/threadgate-auth" 2>"$tmp/auth.log" &
pids="$pids $!"
THREAD_SERVICE_URL=ipc://$tmp/threads.sock THREADS_DB=$tmp/threads.db \
    "$build/thread-service/threadgate-threads" 2>"$tmp/threads.log" &
pids="$pids $!"
GATEWAY_PORT=0 GATEWAY_PORT_FILE=$tmp/gw.port \
    AUTH_SERVICE_URL=ipc://$tmp/auth.sock \
    THREAD_SERVICE_URL=ipc://$tmp/threads.sock \
    "$build/gateway/threadgate-gateway" 2>"$tmp/gw.log" &
pids="$pids $!"
wait_file "$tmp/gw.port"
gw="http://127.0.0.1:$(cat "$tmp/gw.port")"

token=$(curl -sf -X POST "$idp/auth/v1/signup" -H 'apikey: threadgate-dev-anon-key' \
    -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.test","password":"bench-password"}' |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "signup failed" >&2; exit 1; }
tid=$(curl -sf -X POST "$gw/threads" -H "Authorization: Bearer $token" \
    -d '{"metadata":{"bench":true}}' | sed -n 's/.*"thread_id":"\([^"]*\)".*/\1/p')
[ -n "$tid" ] || { echo "create failed" >&2; cat "$tmp/gw.log" >&2; exit 1; }
# Ten more threads so search returns a realistic page.
for i in 1 2 3 4 5 6 7 8 9 10; do
	curl -sf -X POST "$gw/threads" -H "Authorization: Bearer $token" -d '{}' >/dev/null
done

cat >"$tmp/search.lua" <<'LUA'
wrk.method = "POST"
wrk.body   = '{"limit":10}'
wrk.headers["Content-Type"] = "application/json"
LUA

run() { # name, then wrk args
	name=$1; shift
	out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "$@")
	rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
	p50=$(printf '%s\n' "$out" | awk '$1 == "50%" {print $2}')
	p99=$(printf '%s\n' "$out" | awk '$1 == "99%" {print $2}')
	bad=$(printf '%s\n' "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
	printf '%-34s %10s req/s   p50 %-8s p99 %-8s %s\n' "$name" "$rps" "$p50" "$p99" "$bad"
}

echo "threadgate gateway benchmark: wrk -t2 -c$conns -d${secs}s, $(nproc) cores, $(date -u +%FT%TZ)"
run "GET /ok (HTTP only, baseline)" "$gw/ok"
run "GET /threads/{id} (full chain)" -H "Authorization: Bearer $token" "$gw/threads/$tid"
run "POST /threads/search limit 10" -H "Authorization: Bearer $token" -s "$tmp/search.lua" "$gw/threads/search"
