#!/usr/bin/env bash
# Runs `make test` N times in a row (default 5) while two busy loops load
# both cores, as a busy CI machine would: the tests must wait on
# conditions, not on time. The load processes are this script's own
# children and are stopped by PID when it ends.
#
#   scripts/test-under-load.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
mkdir -p out
pids=()
stop_load() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop_load EXIT
for _ in 1 2; do
	( while :; do :; done ) &
	pids+=($!)
done
for i in $(seq 1 "$n"); do
	start=$(date +%s)
	if make test >"out/test-under-load-$i.log" 2>&1; then
		echo "run $i of $n: passed in $(( $(date +%s) - start )) s"
	else
		echo "run $i of $n: FAILED after $(( $(date +%s) - start )) s; log: out/test-under-load-$i.log" >&2
		exit 1
	fi
done
echo "make test passed $n times in a row under load"
