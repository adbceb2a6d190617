#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make test`: the whole suite, as CI runs it.
#   1. scripts/deps.sh --test   missing Debian packages, Node >= 20;
#      scripts/check-banned.sh   no banned C functions (STYLE.md 9.14);
#      make format-check         clang-format 14 with .clang-format
#   2. npm ci                   the pinned JS SDK, jose, oidc-provider
#                               (skipped when node_modules is already up to
#                               date with package-lock.json, unless CI=true
#                               or TG_NPM_CI=1)
#   3. build/      RelWithDebInfo build, then every CTest test (unit,
#                  contract, e2e; those labelled pg run on a throwaway
#                  PostgreSQL cluster, TG_PG_TESTS=ON makes them required),
#                  ctest -j2
#   4. build-asan/ -DTG_SANITIZE=ON (ASan+UBSan), then the tests labelled
#                  TG_ASAN_LABELS (default "unit|contract|e2e")
#   5. make tsan   build-tsan/ -DTG_TSAN=ON (ThreadSanitizer), then the
#                  rpc, contract and gateway e2e tests; a race report fails
#   6. scripts/fuzz.sh   build-fuzz/ with clang, every libFuzzer target
#                  for TG_FUZZ_SECONDS (default 5) from its seeds
# Exits non-zero if any step fails; the last line is a one-line summary.
# Knobs: TG_JOBS (2), TG_SKIP_ASAN=1, TG_ASAN_LABELS (a ctest -L regex),
# TG_SKIP_TSAN=1, TG_SKIP_FUZZ=1, TG_FUZZ_SECONDS.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

jobs=${TG_JOBS:-2}
asan_labels=${TG_ASAN_LABELS:-unit|contract|e2e}
logdir="$root/build/test-logs"
t_start=$SECONDS
summary=()
failed=0

# ASan/UBSan: stop at the first report, with a stack.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

banner() { printf '\n==> %s\n' "$*"; }

finish() {
	local total=$((SECONDS - t_start))
	printf '\n'
	for s in "${summary[@]}"; do
		printf '  %s\n' "$s"
	done
	if [ "$failed" -eq 0 ]; then
		printf 'make test: PASSED in %dm%02ds\n' $((total / 60)) $((total % 60))
		exit 0
	fi
	printf 'make test: FAILED (%d step(s) failed) in %dm%02ds\n' "$failed" $((total / 60)) $((total % 60))
	exit 1
}

# step NAME CMD...: run, time and record one step.
step() {
	local name=$1 t0=$SECONDS rc
	shift
	banner "$name"
	"$@"
	rc=$?
	if [ "$rc" -eq 0 ]; then
		summary+=("ok    $name ($((SECONDS - t0))s)")
	else
		summary+=("FAIL  $name (exit $rc, $((SECONDS - t0))s)")
		failed=$((failed + 1))
	fi
	return "$rc"
}

# ctest_step NAME DIR [ctest args...]: like step, and records the counts.
ctest_step() {
	local name=$1 dir=$2 t0=$SECONDS rc line log
	shift 2
	banner "$name"
	mkdir -p "$logdir"
	log="$logdir/$(basename "$dir").log"
	ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$jobs" "$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	line=$(grep -E 'tests passed|tests failed' "$log" | tail -1)
	if [ "$rc" -eq 0 ]; then
		summary+=("ok    $name: ${line:-?} ($((SECONDS - t0))s)")
	else
		summary+=("FAIL  $name: ${line:-ctest exit $rc} ($((SECONDS - t0))s; log $log)")
		failed=$((failed + 1))
	fi
	return "$rc"
}

npm_ci() {
	local stamp=node_modules/.package-lock.json
	if [ "${CI:-}" != "true" ] && [ "${TG_NPM_CI:-}" != "1" ] && [ -f "$stamp" ] &&
		[ "$stamp" -nt package-lock.json ] && [ "$stamp" -nt package.json ]; then
		echo "node_modules is up to date with package-lock.json (TG_NPM_CI=1 forces npm ci)"
		return 0
	fi
	scripts/npm.sh ci --no-audit --no-fund
}

configure_build() {
	local dir=$1
	shift
	cmake -S . -B "$dir" "$@" && cmake --build "$dir" -j"$jobs"
}

step "dependencies (scripts/deps.sh --test)" scripts/deps.sh --test || finish
step "lint: no banned C functions (scripts/check-banned.sh)" scripts/check-banned.sh
step "format: make format-check (clang-format 14)" make -s format-check
step "node $(scripts/node.sh --version 2>/dev/null || echo '?') + npm ci" npm_ci || finish
step "build build/ (RelWithDebInfo)" configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DTG_PG_TESTS=ON || finish
ctest_step "ctest build/ (all tests)" build
if [ "${TG_SKIP_ASAN:-}" = "1" ]; then
	summary+=("skip  ASan+UBSan build (TG_SKIP_ASAN=1)")
elif step "build build-asan/ (-DTG_SANITIZE=ON)" configure_build build-asan \
	-DCMAKE_BUILD_TYPE=Debug -DTG_SANITIZE=ON -DTG_PG_TESTS=ON; then
	ctest_step "ctest build-asan/ (-L '$asan_labels')" build-asan -L "$asan_labels"
fi
if [ "${TG_SKIP_TSAN:-}" = "1" ]; then
	summary+=("skip  ThreadSanitizer (TG_SKIP_TSAN=1)")
else
	step "ThreadSanitizer: make tsan (rpc, contract and gateway e2e tests)" \
		make -s tsan JOBS="$jobs"
fi
if [ "${TG_SKIP_FUZZ:-}" = "1" ]; then
	summary+=("skip  fuzzing (TG_SKIP_FUZZ=1)")
else
	step "fuzz: every target ${TG_FUZZ_SECONDS:-5}s (scripts/fuzz.sh)" \
		env FUZZ_SECONDS="${TG_FUZZ_SECONDS:-5}" scripts/fuzz.sh
fi
finish
