#!/bin/bash
# bench.sh - end-to-end load run of this build through the shared harness
# (../shared/bench): the service runs as its own process on a spare port,
# and the same veth traffic is captured by tcpdump for comparison.
# Knobs are the harness's (REPS, DUR, SIZES, RATES, REFS, SETUP_N, PROBES);
# the defaults here are a ~5 minute run. Results: out/bench/<time>/, with
# report.md: scripts/benchreport's headline table (this build next to
# tcpdump) and where each scenario lost packets.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
harness=${BENCH_HARNESS:-$top/../shared/bench}
port=${BENCH_PORT:-5099}
[ -x "$harness/run.sh" ] || { echo "no harness at $harness" >&2; exit 1; }

# The harness builds into its own folder, which may be read-only: copy it.
work=$top/out/harness
rm -rf "$work" && mkdir -p "$work" && cp -r "$harness"/. "$work"/

"$top/bin/packetflix" --port "$port" > "$top/out/bench-service.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS -m 1 "http://127.0.0.1:$port/version" >/dev/null 2>&1 && break; sleep 0.1; done

out=$top/out/bench/$(date +%Y%m%d-%H%M%S)
REPS=${REPS:-3} DUR=${DUR:-5s} SIZES=${SIZES:-"64 1400"} RATES=${RATES:-"1000 200000 0"} \
	REFS=${REFS-tcpdump} SETUP_N=${SETUP_N:-10} PROBES=${PROBES:-0} OUT=$out \
	"$work/run.sh" "$port"
# (run.sh has printed its summary.md.)
# The measurements are on disk by now: a report that fails says so and
# leaves them there.
PATH=$PATH:/usr/local/go/bin
(cd "$top" && go run ./scripts/benchreport "$out/results.jsonl") | tee "$out/report.md" ||
	echo "benchreport failed; results are in $out" >&2

# The service idle, as built and with its binary read back cold (see the
# script for why both).
kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
echo; echo "### idle memory (scripts/idle-rss.sh, kB)"; echo
echo '```'
"$top/scripts/idle-rss.sh" "$top/bin/packetflix" | tail -1 | sed 's/^median/as built, median of 3/'
"$top/scripts/idle-rss.sh" --cold "$top/bin/packetflix" | tail -1 | sed 's/^median/read back cold, median of 3/'
echo '```'
