#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Runs npm under Node >= 20 (see scripts/node.sh): the machine's npm when the
# machine's node is new enough, else the npm that scripts/deps.sh --test put
# next to the project-local Node (.tools/node/node_modules/npm), executed by
# that Node. So `npm ci` never runs on Debian 12's Node 18.
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
local_npm="$root/.tools/node/node_modules/npm/bin/npm-cli.js"

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	m=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
	if [ "$m" -ge 20 ] 2>/dev/null; then
		exec npm "$@"
	fi
fi
if [ -f "$local_npm" ]; then
	exec "$root/scripts/node.sh" "$local_npm" "$@"
fi
echo "scripts/npm.sh: no npm running on Node >= 20; run 'scripts/deps.sh --test' first." >&2
exit 127
