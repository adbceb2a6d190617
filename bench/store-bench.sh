#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Storage benchmark (a benchmark, not a test: it asserts nothing). For each
# backend it builds the data set of issue 7 - one user owning N_MAIN
# threads (default 1,000,000) plus N_OTHER threads (default 100,000) of
# 1,000 other users - with bench/threads_load (the thread-service's own
# store code, see there), starts the real stack on loopback (dev IdP,
# auth-service with its cache, thread-service on that database, gateway)
# and measures through HTTP, one connection at a time, p50 / p99 of:
#   GET /threads/{id}                      random ids of the big user
#   POST /threads/search limit 10          default sort
#   POST /threads/search, selective filter {"bucket": ...}: 100 matches
#   POST /threads/count                    exact, no filter
# for a user with 11 threads (the baseline, same run) and for the big one;
# then the head-of-line figure: GET p50/p99 while 8 other connections run
# filtered searches over the big user's rows that no index can narrow
# (a filter on a real number: a full scan until the request's deadline),
# and while 8 run an unselective filter ({"kind": "odd"}, half the rows).
#
# Usage: bench/store-bench.sh [sqlite|pg|both]   (default both)
# Knobs: N_MAIN, N_OTHER, N_OWNERS, N_REQ (requests per figure, 1000),
# BUILD (default <repo>/build-bench, built Release here if missing).
# Needs: curl; for pg the PostgreSQL 15 server (scripts/pg-test-cluster.sh).
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
backends=${1:-both}
n_main=${N_MAIN:-1000000}
n_other=${N_OTHER:-100000}
n_owners=${N_OWNERS:-1000}
n_req=${N_REQ:-1000}
build=${BUILD:-$root/build-bench}
case $backends in
sqlite | pg) ;;
both) backends="sqlite pg" ;;
*) echo "usage: $0 [sqlite|pg|both]" >&2; exit 2 ;;
esac

if [ ! -x "$build/threads_load" ] || [ ! -x "$build/http_latency" ] ||
	[ ! -x "$build/threadgate/gateway/threadgate-gateway" ]; then
	echo "building Release into $build ..." >&2
	cmake -S "$root/bench" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j2 >/dev/null
fi
bin=$build/threadgate

tmp=$(mktemp -d)
pids=""
stop_all() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	pids=""
}
cleanup() {
	stop_all
	if [ -n "${pg_started:-}" ]; then
		"$root/scripts/pg-test-cluster.sh" stop >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
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

wait_ready() { # gateway base URL: until /ready answers 200 (upstreams serving)
	i=0
	until curl -sf -o /dev/null "$1/ready"; do
		i=$((i + 1))
		[ $i -lt 3000 ] || { echo "timeout waiting for $1/ready" >&2; exit 1; }
		sleep 0.01
	done
}

json_field() { # name: first "name":"value" of stdin
	sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1
}

signup() { # email -> "token user_id"
	out=$(curl -sf -X POST "$idp/auth/v1/signup" -H 'apikey: threadgate-dev-anon-key' \
		-H 'Content-Type: application/json' \
		-d "{\"email\":\"$1\",\"password\":\"bench-password-1\"}")
	tok=$(printf '%s' "$out" | json_field access_token)
	uid=$(printf '%s' "$out" | sed -n 's/.*"user":{"id":"\([^"]*\)".*/\1/p')
	[ -n "$tok" ] && [ -n "$uid" ] || { echo "signup failed: $out" >&2; exit 1; }
	echo "$tok $uid"
}

lat() { # label token n method path [body] [more args]
	label=$1; shift
	r=$("$build/http_latency" "$gw" "$@")
	printf '  %-52s %s\n' "$label" "$r"
}

export LOG_LEVEL=warn
echo "threadgate storage benchmark: $n_main + $n_other rows, $(nproc) cores, $(date -u +%FT%TZ)"
for backend in $backends; do
	dir=$tmp/$backend
	mkdir -p "$dir"
	DEV_IDP_PORT=0 DEV_IDP_PORT_FILE=$dir/idp.port DEV_IDP_DB=$dir/idp.db \
		"$bin/dev-idp/threadgate-dev-idp" 2>"$dir/idp.log" &
	pids="$pids $!"
	wait_file "$dir/idp.port"
	idp="http://127.0.0.1:$(cat "$dir/idp.port")"
	set -- $(signup "big-$backend@example.test")
	big_tok=$1 big_uid=$2
	set -- $(signup "small-$backend@example.test")
	small_tok=$1

	if [ "$backend" = pg ]; then
		if [ -z "${pg_started:-}" ]; then
			"$root/scripts/pg-test-cluster.sh" start >/dev/null
			pg_started=1
		fi
		db=$("$root/scripts/pg-test-cluster.sh" createdb)
	else
		db=$dir/threads.db
	fi
	t0=$(date +%s)
	# sqlite has one writer: more loader threads would only wait.
	workers=1
	[ "$backend" = pg ] && workers=4
	"$build/threads_load" "$db" "$big_uid" "$n_main" "$n_other" "$n_owners" \
		"$dir/ids.txt" $workers 2>"$dir/load.log" || { cat "$dir/load.log" >&2; exit 1; }
	echo "[$backend] loaded in $(( $(date +%s) - t0 )) s: $(tail -n 1 "$dir/load.log")"

	AUTH_SERVICE_URL=ipc://$dir/auth.sock SUPABASE_URL=$idp \
		SUPABASE_SERVICE_KEY=threadgate-dev-service-key \
		"$bin/auth-service/threadgate-auth" 2>"$dir/auth.log" &
	pids="$pids $!"
	THREAD_SERVICE_URL=ipc://$dir/threads.sock THREADS_DB=$db \
		"$bin/thread-service/threadgate-threads" 2>"$dir/threads.log" &
	pids="$pids $!"
	GATEWAY_PORT=0 GATEWAY_PORT_FILE=$dir/gw.port \
		AUTH_SERVICE_URL=ipc://$dir/auth.sock \
		THREAD_SERVICE_URL=ipc://$dir/threads.sock \
		"$bin/gateway/threadgate-gateway" 2>"$dir/gw.log" &
	pids="$pids $!"
	wait_file "$dir/gw.port"
	gw="http://127.0.0.1:$(cat "$dir/gw.port")"
	# The gateway listens before its upstreams may: a loaded machine can
	# take a while to start the thread-service.
	wait_ready "$gw"

	# The small user: 11 threads, buckets b0..b10.
	: >"$dir/small_ids.txt"
	for i in 0 1 2 3 4 5 6 7 8 9 10; do
		id=$(curl -sf -X POST "$gw/threads" -H "Authorization: Bearer $small_tok" \
			-d "{\"metadata\":{\"seq\":$i,\"bucket\":\"b$i\",\"kind\":\"odd\"}}" |
			json_field thread_id)
		[ -n "$id" ] || { echo "create failed" >&2; cat "$dir/gw.log" >&2; exit 1; }
		echo "$id" >>"$dir/small_ids.txt"
	done

	for who in small big; do
		if [ $who = small ]; then tok=$small_tok ids=$dir/small_ids.txt rows=11
		else tok=$big_tok ids=$dir/ids.txt rows=$n_main; fi
		echo "[$backend] $who user: owns $rows of the $((n_main + n_other + 11)) threads"
		lat "GET /threads/{id}" "$tok" "$n_req" GET "/threads/{id}" --ids "$ids"
		lat "POST /threads/search limit 10" "$tok" "$n_req" POST /threads/search '{"limit":10}'
		lat "POST /threads/search bucket filter (<=100 rows)" "$tok" "$n_req" POST \
			/threads/search '{"metadata":{"bucket":"b42"},"limit":10}'
		lat "POST /threads/count" "$tok" $((n_req / 5)) POST /threads/count '{}' --warmup 5
	done
	echo "[$backend] head of line: GET /threads/{id} while 8 connections search"
	lat "8 x full-scan filter {\"seq\":0.5} (no index)" "$big_tok" "$n_req" GET "/threads/{id}" \
		--ids "$dir/ids.txt" --bg 8 POST /threads/search '{"metadata":{"seq":0.5},"limit":10}'
	lat "8 x unselective filter {\"kind\":\"odd\"}" "$big_tok" "$n_req" GET "/threads/{id}" \
		--ids "$dir/ids.txt" --bg 8 POST /threads/search '{"metadata":{"kind":"odd"},"limit":10}'
	stop_all
done
