#!/usr/bin/env bash
# Run the official @livestore/sync-cf 0.4.0 worker locally (workerd via wrangler dev --local).
#
#   bench/reference-server/run.sh PORT STATE_DIR
#
# - Installs node_modules with `npm ci` on first use.
# - The script `exec`s wrangler, so its pid becomes wrangler's pid. Wrangler spawns a
#   second node process, esbuild and two workerd processes. If the script is not already
#   a process-group leader it re-execs through `setsid` (no fork in that case), so
#   pid == process-group id and the whole tree can be stopped with
#       kill -TERM -- -<pid>         # the whole group; always works
#   `kill -TERM <pid>` alone also stops everything (wrangler shuts workerd down), but
#   `kill -KILL <pid>` orphans workerd, which keeps serving the port -> kill the group.
#   From Rust: spawn with CommandExt::process_group(0) (or rely on the setsid above)
#   and send SIGTERM to -pid.
# - Ready when it prints "Ready on http://127.0.0.1:PORT" (about 5-10 s), or poll
#   `curl -s http://127.0.0.1:PORT/` until it answers
#   "Info: Sync backend endpoint for @livestore/sync-cf."
# - STATE_DIR holds the Durable Object SQLite storage; delete it for a fresh server
#   (new backendId). Relative paths are resolved against the caller's cwd.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 PORT STATE_DIR" >&2
  exit 2
fi
PORT="$1"
STATE_DIR="$2"
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if [ ! -x node_modules/.bin/wrangler ]; then
  echo "[reference-server] node_modules missing, running npm ci ..." >&2
  npm ci --no-audit --no-fund >&2
fi

export WRANGLER_SEND_METRICS=false
# Wrangler's debug log files (if any) go next to the state, not into the user's home.
export WRANGLER_LOG_PATH="${WRANGLER_LOG_PATH:-$STATE_DIR/wrangler-logs}"
# Exec the local bin directly (not via npx, which would add an npm parent process).
WRANGLER=(./node_modules/.bin/wrangler dev --local --ip 127.0.0.1 --port "$PORT" --persist-to "$STATE_DIR")
if [ "$(ps -o pgid= -p $$ | tr -d ' ')" != "$$" ] && command -v setsid >/dev/null; then
  # Not a group leader: setsid execs in place (same pid) and makes us one.
  exec setsid "${WRANGLER[@]}"
fi
exec "${WRANGLER[@]}"
