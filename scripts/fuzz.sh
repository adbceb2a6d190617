#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make fuzz`: builds build-fuzz/ with Debian's clang (-DTG_FUZZ=ON:
# libFuzzer + ASan + UBSan) and runs every fuzz target for FUZZ_SECONDS
# seconds (default 60), one after the other, from its committed seeds
# (fuzz/corpus/<target>, only read). New inputs go to
# build-fuzz/corpus/<target> and are kept between runs, so repeated runs
# go deeper. Prints one line per target - executions, executions/s,
# coverage (libFuzzer's cov: edges and ft: features), corpus size - and
# writes them to build-fuzz/fuzz-summary.txt. A crash, leak, sanitizer
# report or timeout leaves the input in build-fuzz/crashes/ and makes the
# script exit 1 (logs in build-fuzz/logs/). `make test` runs it with 5 s
# per target. Knobs: FUZZ_SECONDS, FUZZ_TARGETS (space-separated names),
# TG_JOBS (build parallelism).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

secs=${FUZZ_SECONDS:-60}
jobs=${TG_JOBS:-2}
dir=build-fuzz
targets=${FUZZ_TARGETS:-fuzz_http_request fuzz_reply_render fuzz_auth_rpc fuzz_jwt fuzz_json_filter fuzz_threads_rpc}
# One input may take this long before it counts as a hang, seconds.
input_timeout=10
# libFuzzer's RSS cap, MiB (ASan's quarantine alone takes a few hundred).
rss_limit=2048

cc=$(command -v clang-14 || command -v clang || true)
if [ -z "$cc" ]; then
	echo "fuzz: clang is not installed (scripts/deps.sh --test installs clang-14 and libclang-rt-14-dev)" >&2
	exit 1
fi
CC=$cc cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTG_FUZZ=ON >/dev/null || exit 1
cmake --build "$dir" -j"$jobs" --target fuzz_targets || exit 1
mkdir -p "$dir/logs" "$dir/crashes"

failed=0
summary="$dir/fuzz-summary.txt"
printf '%-18s %8s %12s %9s %6s %7s %s\n' target seconds executions 'exec/s' cov ft corpus | tee "$summary"
for t in $targets; do
	work="$dir/corpus/$t"
	log="$dir/logs/$t.log"
	mkdir -p "$work"
	"$dir/fuzz/$t" -max_total_time="$secs" -timeout="$input_timeout" \
		-rss_limit_mb="$rss_limit" -print_final_stats=1 \
		-artifact_prefix="$dir/crashes/$t-" \
		"$work" "fuzz/corpus/$t" >"$log" 2>&1
	rc=$?
	# The last status line: "#N DONE cov: C ft: F corp: U/S ... exec/s: E".
	last=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	cov=$(printf '%s' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(printf '%s' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(printf '%s' "$last" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')
	printf '%-18s %8s %12s %9s %6s %7s %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" \
		"${cov:-?}" "${ft:-?}" "${corp:-?}" | tee -a "$summary"
	if [ "$rc" -ne 0 ]; then
		echo "fuzz: $t FAILED (exit $rc); input in $dir/crashes/, log $log:" >&2
		grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -5 >&2
		failed=$((failed + 1))
	fi
done
[ "$failed" -eq 0 ]
