#!/bin/bash
# idle-rss.sh [--cold] [BIN] [PORT] - the service's idle memory, as the
# idle budget is stated: VmRSS a few seconds after start, then after one
# discovery listing. Three runs; prints each and the medians (kB).
#
# Run as root (the service needs it). Kills only the PIDs it starts.
#
# Most of the idle RSS is file-backed: pages of the binary mapped from the
# page cache (RssFile). How many get mapped depends on how the binary got
# into the page cache, not on the program: a binary the linker has just
# written sits in large folios, and Linux 6.18 (where this was measured)
# maps a whole folio per fault: about 5 MB more RssFile than the same
# bytes read back from disk.
# --cold writes the binary back and drops it from the page cache before
# each run (sync, then dd iflag=nocache: read-only, so a copy of the binary
# running elsewhere is no obstacle), so that runs compare like with like;
# quote both.
set -euo pipefail

cold=false
if [ "${1:-}" = --cold ]; then
	cold=true
	shift
fi
bin=${1:-bin/packetflix}
port=${2:-5097}
settle=${SETTLE:-4}

status() { awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s ", $2 }' "/proc/$1/status"; }

for i in 1 2 3; do
	if $cold; then
		sync --data "$bin"
		dd if="$bin" iflag=nocache count=0 status=none
	fi
	"$bin" --port "$port" >/dev/null 2>&1 &
	pid=$!
	sleep "$settle"
	idle=$(status "$pid")
	curl -sf -o /dev/null "http://localhost:$port/discover/mobyshark" || echo "run $i: discovery listing failed" >&2
	sleep 2
	listed=$(status "$pid")
	kill "$pid"
	wait "$pid" || true
	echo "$idle$listed"
done | awk '
	{ for (f = 1; f <= 6; f++) v[f, NR] = $f
	  printf "run %d: idle VmRSS %d (anon %d, file %d); after listing VmRSS %d (anon %d, file %d)\n", NR, $1, $2, $3, $4, $5, $6 }
	END {
		# Median of three: the one neither smallest nor largest.
		for (f = 1; f <= 6; f++) {
			a = v[f, 1]; b = v[f, 2]; c = v[f, 3]
			m[f] = (a > b) ? ((b > c) ? b : ((a > c) ? c : a)) : ((a > c) ? a : ((b > c) ? c : b))
		}
		printf "median: idle VmRSS %d (anon %d, file %d); after listing VmRSS %d (anon %d, file %d)\n", m[1], m[2], m[3], m[4], m[5], m[6]
	}'
