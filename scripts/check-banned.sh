#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# STYLE.md §9.14: the banned-function list, in the spirit of curl's
# checksrc. Lists every call of gets/sprintf/vsprintf/strcpy/strcat/strtok/
# atoi/atol/atoll in the project's C sources (not the generated protobuf-c
# code, which lives in the build tree). Exit 1 when any is found.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='(^|[^A-Za-z0-9_])(gets|sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|atoll)[[:space:]]*\('
files=$(find common auth-service thread-service gateway dev-idp tests bench fuzz -name '*.[ch]' 2>/dev/null | sort)
[ -n "$files" ] || exit 0
# shellcheck disable=SC2086
if hits=$(grep -nE "$pattern" $files | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'); then
	echo "banned functions (use snprintf / cm_parse_i64 / strtok_r-free parsing):"
	echo "$hits"
	exit 1
fi
echo "check-banned: no banned functions in $(echo "$files" | wc -l) files"
