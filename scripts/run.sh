#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make run`: starts the whole threadgate stack in the foreground.
#   - loads .env (KEY=VALUE lines; never evaluated as shell) without
#     overriding variables already in the environment;
#   - with SUPABASE_URL and SUPABASE_SERVICE_KEY set, uses that IdP;
#     otherwise starts the dev IdP (development only) on
#     127.0.0.1:$DEV_IDP_PORT (9999) with its database in .data/;
#   - starts the thread-service (.data/threads.db), the auth-service
#     (supabase mode) and the gateway on $GATEWAY_PORT (2024), talking over
#     ipc:// sockets in .data/run/;
#   - prints the URLs, the dev anon key and a curl example;
#   - Ctrl-C (or SIGTERM) stops every process (gateway first); if any
#     process dies, the others are stopped and the script exits 1.
# Exit codes: 0 stopped by Ctrl-C/SIGTERM, 1 a service died or failed to
# start, 2 configuration problem (port taken, binary missing, bad .env).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

build=${TG_BUILD_DIR:-$root/build}
data=${TG_DATA_DIR:-$root/.data}
# How long each service may take to become ready (tenths of a second).
READY_TENTHS=300
# How long each service may take to stop after SIGTERM (tenths of a second).
STOP_TENTHS=100
# Longest .env line accepted, in bytes (a URL or key is far shorter).
ENV_LINE_MAX=4096

die() { printf 'run: %s\n' "$*" >&2; exit 2; }
say() { printf 'run: %s\n' "$*"; }

# ---------------------------------------------------------------------
# .env: KEY=VALUE, optional "export ", optional matching quotes around the
# value, # comments. Values are taken literally: no $expansion, no `cmd`.
# ---------------------------------------------------------------------
load_env_file() {
	local f=$1 n=0 line key val
	[ -f "$f" ] || return 0
	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		line=${line%$'\r'}
		[ "${#line}" -le "$ENV_LINE_MAX" ] || die "$f:$n: line longer than $ENV_LINE_MAX bytes"
		[[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
		line=${line#"${line%%[![:space:]]*}"}
		line=${line#export }
		[[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || die "$f:$n: expected KEY=VALUE"
		key=${BASH_REMATCH[1]}
		val=${BASH_REMATCH[2]}
		if [[ "$val" =~ ^\"(.*)\"[[:space:]]*$ ]] || [[ "$val" =~ ^\'(.*)\'[[:space:]]*$ ]]; then
			val=${BASH_REMATCH[1]}
		else
			val=${val%%[[:space:]]#*}
			val=${val%"${val##*[![:space:]]}"}
		fi
		# The environment wins over .env (GATEWAY_PORT=8124 make run).
		if [ -z "${!key+x}" ]; then
			export "$key=$val"
		fi
	done <"$f"
	say "loaded $f"
}
load_env_file "$root/.env"

GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1}
GATEWAY_PORT=${GATEWAY_PORT:-2024}
DEV_IDP_PORT=${DEV_IDP_PORT:-9999}
DEV_IDP_ANON_KEY=${DEV_IDP_ANON_KEY:-threadgate-dev-anon-key}
DEV_IDP_SERVICE_KEY=${DEV_IDP_SERVICE_KEY:-threadgate-dev-service-key}

valid_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
valid_port "$GATEWAY_PORT" || die "GATEWAY_PORT='$GATEWAY_PORT' is not a port number (1-65535)"
valid_port "$DEV_IDP_PORT" || die "DEV_IDP_PORT='$DEV_IDP_PORT' is not a port number (1-65535)"

use_dev_idp=1
if [ -n "${SUPABASE_URL:-}" ] && [ -n "${SUPABASE_SERVICE_KEY:-}" ]; then
	use_dev_idp=0
elif [ -n "${SUPABASE_URL:-}" ] || [ -n "${SUPABASE_SERVICE_KEY:-}" ]; then
	die "set both SUPABASE_URL and SUPABASE_SERVICE_KEY to use your own IdP (or neither for the dev IdP)"
fi

for b in gateway/threadgate-gateway auth-service/threadgate-auth thread-service/threadgate-threads; do
	[ -x "$build/$b" ] || die "$build/$b is missing: build first (make build)"
done
if [ "$use_dev_idp" -eq 1 ]; then
	[ -x "$build/dev-idp/threadgate-dev-idp" ] || die "$build/dev-idp/threadgate-dev-idp is missing: build first (make build)"
fi

# ---------------------------------------------------------------------
# Ports: refuse early, naming the port and how to choose another.
# /proc/net/tcp{,6} lists every listening socket (state 0A) on any address.
# ---------------------------------------------------------------------
port_listening() {
	local hex
	hex=$(printf '%04X' "$1")
	awk -v p="$hex" '$4 == "0A" { split($2, a, ":"); if (toupper(a[length(a)]) == p) f = 1 }
		END { exit(f ? 0 : 1) }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
if port_listening "$GATEWAY_PORT"; then
	die "port $GATEWAY_PORT (gateway) is already in use. Choose another: GATEWAY_PORT=8124 make run"
fi
if [ "$use_dev_idp" -eq 1 ] && port_listening "$DEV_IDP_PORT"; then
	die "port $DEV_IDP_PORT (dev IdP) is already in use. Choose another: DEV_IDP_PORT=9998 make run"
fi

mkdir -p "$data/run" "$data/logs" || die "cannot create $data"
chmod 700 "$data" "$data/run"
export AUTH_SERVICE_URL=${AUTH_SERVICE_URL:-ipc://$data/run/auth.sock}
export THREAD_SERVICE_URL=${THREAD_SERVICE_URL:-ipc://$data/run/threads.sock}
# The services' stderr goes through tee/sed below, so they would pick JSON
# (not a terminal); a person is reading: text, unless LOG_FORMAT says json.
export LOG_FORMAT=${LOG_FORMAT:-text}

# ---------------------------------------------------------------------
# Processes. Each runs in its own process group (set -m), so Ctrl-C reaches
# only this script, which stops them in order: gateway first (no new
# requests), then the services, then the IdP.
# ---------------------------------------------------------------------
set -m
names=()
pids=()
stopping=0

start() {
	local name=$1
	shift
	# stdout+stderr: to the terminal with a prefix, and to .data/logs/.
	# tee and sed read the pipe in blocks (sed -u would read it one byte
	# per system call); stdbuf -oL has sed write each line at once.
	"$@" > >(exec tee -a "$data/logs/$name.log" | exec stdbuf -oL sed "s/^/[$name] /") 2>&1 &
	names+=("$name")
	pids+=("$!")
}

stop_all() {
	local i pid n
	stopping=1
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill -TERM "${pids[$i]}" 2>/dev/null
		# bounded wait for this one before stopping the next
		for ((n = 0; n < STOP_TENTHS; n++)); do
			kill -0 "${pids[$i]}" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			say "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM; killing it"
			kill -KILL "${pids[$i]}" 2>/dev/null
		fi
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null
	done
}

on_signal() {
	trap - INT TERM
	printf '\n'
	say "stopping..."
	stop_all
	say "stopped"
	exit 0
}
trap on_signal INT TERM
trap 'if [ "$stopping" -eq 0 ]; then stop_all; fi' EXIT

# fail NAME MESSAGE: a service did not come up.
fail() {
	say "$1: $2 (log: $data/logs/$1.log)"
	trap - INT TERM
	stop_all
	exit 1
}

# alive_or_fail INDEX
alive_or_fail() {
	kill -0 "${pids[$1]}" 2>/dev/null || fail "${names[$1]}" "exited during start-up"
}

# wait_file INDEX FILE: until FILE exists (ipc socket, port file).
wait_file() {
	local n
	for ((n = 0; n < READY_TENTHS; n++)); do
		[ -s "$2" ] || [ -S "$2" ] && return 0
		alive_or_fail "$1"
		sleep 0.1
	done
	fail "${names[$1]}" "not ready after $((READY_TENTHS / 10)) s (waiting for $2)"
}

# http_ok PORT PATH: 0 when GET answers 200 (bash /dev/tcp; no curl needed).
http_ok() {
	local status
	status=$(exec 3<>"/dev/tcp/127.0.0.1/$1" &&
		printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3 &&
		IFS= read -r -t 2 line <&3 && printf '%s' "$line") 2>/dev/null || return 1
	[[ "$status" =~ ^HTTP/1\.[01]\ 200 ]]
}

wait_http() {
	local n
	for ((n = 0; n < READY_TENTHS; n++)); do
		http_ok "$2" "$3" && return 0
		alive_or_fail "$1"
		sleep 0.1
	done
	fail "${names[$1]}" "GET $3 did not answer 200 within $((READY_TENTHS / 10)) s"
}

ipc_path() {
	case "$1" in
	ipc://*) printf '%s' "${1#ipc://}" ;;
	*) printf '' ;;
	esac
}

if [ "$use_dev_idp" -eq 1 ]; then
	rm -f "$data/run/dev-idp.port"
	start dev-idp env DEV_IDP_HOST=127.0.0.1 DEV_IDP_PORT="$DEV_IDP_PORT" \
		DEV_IDP_PORT_FILE="$data/run/dev-idp.port" DEV_IDP_DB="${DEV_IDP_DB:-$data/dev-idp.db}" \
		DEV_IDP_ANON_KEY="$DEV_IDP_ANON_KEY" DEV_IDP_SERVICE_KEY="$DEV_IDP_SERVICE_KEY" \
		"$build/dev-idp/threadgate-dev-idp"
	wait_file 0 "$data/run/dev-idp.port"
	idp_url="http://127.0.0.1:$DEV_IDP_PORT"
	anon_key=$DEV_IDP_ANON_KEY
	export SUPABASE_URL=$idp_url SUPABASE_SERVICE_KEY=$DEV_IDP_SERVICE_KEY AUTH_PROVIDER=supabase
else
	idp_url=${SUPABASE_URL%/}
	anon_key=${SUPABASE_ANON_KEY:-<your project anon key>}
	say "using the IdP at $idp_url (SUPABASE_URL); the dev IdP is not started"
fi

sock=$(ipc_path "$THREAD_SERVICE_URL")
[ -n "$sock" ] && rm -f "$sock"
start threads env THREADS_DB="${THREADS_DB:-$data/threads.db}" "$build/thread-service/threadgate-threads"
i=$((${#pids[@]} - 1))
if [ -n "$sock" ]; then wait_file "$i" "$sock"; fi

sock=$(ipc_path "$AUTH_SERVICE_URL")
[ -n "$sock" ] && rm -f "$sock"
start auth "$build/auth-service/threadgate-auth"
i=$((${#pids[@]} - 1))
if [ -n "$sock" ]; then wait_file "$i" "$sock"; fi

rm -f "$data/run/gateway.port"
start gateway env GATEWAY_HOST="$GATEWAY_HOST" GATEWAY_PORT="$GATEWAY_PORT" \
	GATEWAY_PORT_FILE="$data/run/gateway.port" "$build/gateway/threadgate-gateway"
i=$((${#pids[@]} - 1))
wait_file "$i" "$data/run/gateway.port"
wait_http "$i" "$GATEWAY_PORT" /ok

gw="http://localhost:$GATEWAY_PORT"
cat <<MSG

  threadgate is running.  Ctrl-C stops everything.

  gateway     $gw          (LangGraph SDK: apiUrl / url)
  readiness   $gw/ready    (200 once the auth- and thread-service answer Health)
  IdP         $idp_url$([ "$use_dev_idp" -eq 1 ] && printf '   (dev IdP: for development only)')
  anon key    $anon_key
  data        $data   (logs in $data/logs)

  Try it (sign up, log in, create a thread):

    curl -s -o /dev/null -w 'signup: HTTP %{http_code}\\n' -X POST '$idp_url/auth/v1/signup' \\
      -H 'apikey: $anon_key' -H 'Content-Type: application/json' \\
      -d '{"email":"me@example.com","password":"secret-password"}'
    TOKEN=\$(curl -s -X POST '$idp_url/auth/v1/token?grant_type=password' -H 'apikey: $anon_key' \\
      -H 'Content-Type: application/json' -d '{"email":"me@example.com","password":"secret-password"}' \\
      | sed -n 's/.*"access_token" *: *"\\([^"]*\\)".*/\\1/p')
    curl -s -X POST '$gw/threads' -H "Authorization: Bearer \$TOKEN" \\
      -H 'Content-Type: application/json' -d '{"metadata":{"topic":"hello"}}'

MSG

# Supervise: the first child to exit ends the run.
while :; do
	wait -n "${pids[@]}"
	rc=$?
	[ "$stopping" -eq 1 ] && exit 0
	for ((i = 0; i < ${#pids[@]}; i++)); do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			say "${names[$i]} (pid ${pids[$i]}) exited with status $rc; stopping the others"
			trap - INT TERM
			stop_all
			exit 1
		fi
	done
done
