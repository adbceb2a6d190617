#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make bench`: what one request costs, end to end, next to nginx
# answering `return 200` with a body of the same size, measured in the same
# run on the same machine (a benchmark: it prints numbers, asserts nothing).
#
# The stack runs exactly as `make run` starts it - scripts/run.sh with its
# default settings and default logging (the access lines, the terminal
# prefixing, the log files) - from a Release build (build-rel/), on free
# loopback ports, its data in a temporary directory. Scenarios:
#   GET /threads/{id}       auth cache hit, sqlite point read
#   POST /threads           create
#   POST /threads/search    limit 10
#   POST /threads/count
#   cold token GET          every request with a token never seen: the
#                           auth-service asks the IdP (the dev IdP here)
# For each: wrk -t2 -c64 (req/s, p50, p99, the ratio to nginx), the CPU
# time each process spent per request (utime+stime from /proc, summed over
# its threads) and its context switches per request (voluntary +
# involuntary, every thread), then one connection at a time (p50, p99:
# bench/http_latency), with each service's switches and CPU per request at
# that load. The cold-token run uses http_latency with one fresh token per
# request (16 connections). Then the floor at one request in flight:
# a socket round trip, bare nng REQ/REP, and the rpc layer's Health call to
# the running thread-service (bench/rpc_floor).
#
# Usage: bench/make-bench.sh        Knobs: SECS (10 per wrk run), CONNS (64),
# N1 (one-connection requests, 3000), COLD_N (cold tokens, 3000),
# LOG_LEVEL/LOG_FORMAT (passed through: default settings otherwise).
# Needs wrk and nginx (`make bench` installs them: scripts/deps.sh --bench).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

secs=${SECS:-10}
conns=${CONNS:-64}
n1=${N1:-3000}
cold_n=${COLD_N:-3000}
build=$root/build-rel
bbuild=$root/build-rel/bench

command -v wrk >/dev/null || { echo "bench: wrk is missing (scripts/deps.sh --bench)" >&2; exit 2; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "bench: nginx is missing (scripts/deps.sh --bench)" >&2; exit 2; }

echo "bench: Release build in $build ..." >&2
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j2 --target threadgate-gateway threadgate-auth \
	threadgate-threads threadgate-dev-idp >/dev/null
cmake -S bench -B "$bbuild" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$bbuild" -j2 --target http_latency mint_tokens rpc_floor >/dev/null

tmp=$(mktemp -d)
run_pid=""
nginx_pid=""
cleanup() {
	[ -n "$run_pid" ] && kill -TERM "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
	[ -n "$nginx_pid" ] && kill -TERM "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# free_port: a port nothing listens on (/proc/net/tcp{,6}, as run.sh checks).
free_port() {
	local p hex
	while :; do
		p=$((20000 + RANDOM % 30000))
		hex=$(printf '%04X' "$p")
		awk -v p="$hex" '$4 == "0A" { split($2, a, ":"); if (toupper(a[length(a)]) == p) f = 1 }
			END { exit(f ? 1 : 0) }' /proc/net/tcp /proc/net/tcp6 2>/dev/null && break
	done
	echo "$p"
}

gw_port=$(free_port)
idp_port=$(free_port)
# The stack as `make run` starts it (scripts/run.sh), output to a file
# instead of a terminal.
TG_BUILD_DIR=$build TG_DATA_DIR=$tmp/data GATEWAY_PORT=$gw_port DEV_IDP_PORT=$idp_port \
	setsid scripts/run.sh >"$tmp/run.out" 2>&1 &
run_pid=$!
for _ in $(seq 1 300); do
	grep -q "threadgate is running" "$tmp/run.out" 2>/dev/null && break
	kill -0 "$run_pid" 2>/dev/null || { cat "$tmp/run.out" >&2; exit 1; }
	sleep 0.1
done
grep -q "threadgate is running" "$tmp/run.out" || { cat "$tmp/run.out" >&2; exit 1; }
gw=http://127.0.0.1:$gw_port
idp=http://127.0.0.1:$idp_port

# pid of each service (children of run.sh) and of its log plumbing.
pid_of() { pgrep -P "$run_pid" -x "$1" | head -n 1; }
declare -A pid
pid[gateway]=$(pid_of threadgate-gate)
pid[auth]=$(pid_of threadgate-auth)
pid[threads]=$(pid_of threadgate-thre)
pid[idp]=$(pid_of threadgate-dev-)
# Every descendant of run.sh that is not a service: the log plumbing.
plumbing=$(ps -e -o pid=,ppid=,comm= | awk -v root="$run_pid" '
	{ parent[$1] = $2; comm[$1] = $3 }
	END {
		for (p in parent) {
			for (q = parent[p]; q != "" && q != 1; q = parent[q])
				if (q == root) { if (comm[p] !~ /^threadgate-/) print p; break }
		}
	}')
for n in gateway auth threads idp; do
	[ -n "${pid[$n]}" ] || { echo "bench: no pid for $n" >&2; ps -ef --forest >&2; exit 1; }
done

anon=threadgate-dev-anon-key
signup=$(curl -sf -X POST "$idp/auth/v1/signup" -H "apikey: $anon" -H 'Content-Type: application/json' \
	-d '{"email":"bench@example.test","password":"bench-password-1"}')
token=$(printf '%s' "$signup" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
refresh=$(printf '%s' "$signup" | sed -n 's/.*"refresh_token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "bench: signup failed: $signup" >&2; exit 1; }
auth=(-H "Authorization: Bearer $token")
tid=$(curl -sf -X POST "$gw/threads" "${auth[@]}" -d '{"metadata":{"bench":true}}' |
	sed -n 's/.*"thread_id":"\([^"]*\)".*/\1/p')
for _ in 1 2 3 4 5 6 7 8 9 10; do curl -sf -X POST "$gw/threads" "${auth[@]}" -d '{}' >/dev/null; done
body=$(curl -sf "$gw/threads/$tid" "${auth[@]}")
bodylen=${#body}

# Cold tokens: a chain of refresh grants (each gives a new access token).
"$bbuild/mint_tokens" "$idp" "$anon" "$refresh" "$cold_n" >"$tmp/tokens"

# nginx: the floor, same body size.
mkdir -p "$tmp/nginx/logs"
nginx_port=$(free_port)
pad=$(printf '%*s' "$bodylen" '' | tr ' ' 'x')
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
master_process on;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	keepalive_requests 1000000;
	client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx;
	fastcgi_temp_path $tmp/nginx; uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
	server {
		listen 127.0.0.1:$nginx_port;
		location / { default_type application/json; return 200 '$pad'; }
	}
}
CONF
"$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$nginx_port/" >/dev/null 2>&1 && break; sleep 0.05; done

# ticks and context switches of a process, all its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
ctx_sw() {
	cat /proc/"$1"/task/*/status 2>/dev/null |
		awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s + 0}'
}
nginx_pids() { pgrep -P "$nginx_pid" -x nginx; echo "$nginx_pid"; }
hz=$(getconf CLK_TCK)

# snapshot NAME PIDS...: "ticks ctx" summed
snap() {
	local t=0 c=0 p
	for p in "$@"; do
		t=$((t + $(cpu_ticks "$p")))
		c=$((c + $(ctx_sw "$p")))
	done
	echo "$t $c"
}

wrk_lua() { # method path body -> lua file
	local f=$tmp/$RANDOM.lua
	printf 'wrk.method = "%s"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
		"$1" "$([ -n "$3" ] && printf "'%s'" "$3" || echo nil)" >"$f"
	echo "$f"
}

nginx_rps=""
# scenario NAME METHOD PATH BODY: wrk, CPU and switches per process, one
# connection p50/p99.
scenario() {
	local name=$1 method=$2 path=$3 body=$4 url lua out rps p50 p99 bad
	local -A before after
	local procs=(gateway auth threads idp)
	if [ "$name" = nginx ]; then url="http://127.0.0.1:$nginx_port/"; else url="$gw$path"; fi
	lua=$(wrk_lua "$method" "$path" "$body")
	if [ "$name" = nginx ]; then
		before[nginx]=$(snap $(nginx_pids))
	else
		for p in "${procs[@]}"; do before[$p]=$(snap "${pid[$p]}"); done
		before[logs]=$(snap $plumbing)
	fi
	out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$lua" "${auth[@]}" "$url")
	if [ "$name" = nginx ]; then
		after[nginx]=$(snap $(nginx_pids))
	else
		for p in "${procs[@]}"; do after[$p]=$(snap "${pid[$p]}"); done
		after[logs]=$(snap $plumbing)
	fi
	rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
	p50=$(printf '%s\n' "$out" | awk '$1 == "50%" {print $2}')
	p99=$(printf '%s\n' "$out" | awk '$1 == "99%" {print $2}')
	bad=$(printf '%s\n' "$out" | awk '/Non-2xx|Socket errors/ {printf "%s ", $0}')
	local reqs
	reqs=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
	[ "$name" = nginx ] && nginx_rps=$rps
	printf '%-26s %9s req/s  ratio %5s  p50 %-8s p99 %-8s %s\n' "$name" "$rps" \
		"$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')" "$p50" "$p99" "$bad"
	local line="    CPU us/req:" ctx="    switches/req:" total=0 k tb ta cb ca us
	for k in "${!after[@]}"; do
		read -r tb cb <<<"${before[$k]}"
		read -r ta ca <<<"${after[$k]}"
		us=$(awk -v t=$((ta - tb)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
		total=$(awk -v a="$total" -v b="$us" 'BEGIN {printf "%.1f", a + b}')
		line="$line $k $us"
		ctx="$ctx $k $(awk -v c=$((ca - cb)) -v n="$reqs" 'BEGIN {printf "%.2f", c / n}')"
	done
	echo "$line  total $total"
	echo "$ctx"
	if [ "$name" != nginx ]; then
		echo "    one connection: $("$bbuild/http_latency" "$gw" "$token" "$n1" "$method" "$path" ${body:+"$body"} --warmup 200)"
		# Again, counting each service's context switches and CPU per
		# request at one request in flight.
		for p in gateway threads; do before[$p]=$(snap "${pid[$p]}"); done
		"$bbuild/http_latency" "$gw" "$token" "$n1" "$method" "$path" ${body:+"$body"} --warmup 0 >/dev/null
		ctx="    one connection, switches/req:"
		for p in gateway threads; do
			read -r tb cb <<<"${before[$p]}"
			read -r ta ca <<<"$(snap "${pid[$p]}")"
			ctx="$ctx $p $(awk -v c=$((ca - cb)) -v n="$n1" 'BEGIN {printf "%.2f", c / n}')"
			ctx="$ctx ($(awk -v t=$((ta - tb)) -v hz="$hz" -v n="$n1" 'BEGIN {printf "%.0f", t * 1e6 / hz / n}') us CPU)"
		done
		echo "$ctx"
	else
		echo "    one connection: $("$bbuild/http_latency" "http://127.0.0.1:$nginx_port" "$token" "$n1" GET / --warmup 200)"
	fi
}

echo "threadgate bench: wrk -t2 -c$conns -d${secs}s, $(nproc) cores, $(date -u +%FT%TZ), body $bodylen bytes"
echo "(CPU per request: utime+stime from /proc over the wrk run; 'logs' is make run's tee/prefix plumbing)"
scenario nginx GET / ""
scenario "GET /threads/{id}" GET "/threads/$tid" ""
scenario "POST /threads (create)" POST /threads '{"metadata":{"bench":true}}'
scenario "POST /threads/search" POST /threads/search '{"limit":10}'
scenario "POST /threads/count" POST /threads/count '{}'
echo "one request in flight, below threadgate's code (bench/rpc_floor: 100-byte round trips between two processes):"
"$bbuild/rpc_floor" "$n1" "ipc://$tmp/data/run/threads.sock" | sed 's/^/    /'
echo "cold tokens (each request a token the auth-service has not seen; IdP call):"
echo "    16 connections: $("$bbuild/http_latency" "$gw" x "$cold_n" GET "/threads/$tid" --tokens "$tmp/tokens" --conns 16 --warmup 0)"
