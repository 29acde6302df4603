#!/usr/bin/env bash
# Media bridge load benchmark: N bridged calls (DTLS-SRTP browser side, plain RTP other side,
# 50 packets/s each way) against gatewayd's media bridge, then the same against rtpengine
# (userspace) for the ratio. Server on CPU 0, load client on CPU 1. Loopback only.
#
#   bench/media/run.sh [CALLS=500] [SECONDS=30]
#   MODE=transcode bench/media/run.sh [CALLS] [SECONDS]
#
# MODE=transcode: the browser sides negotiate Opus and send a real Opus stream, the plain
# sides send PCMU, and both engines transcode every call both ways (gatewayd with
# agent_codecs = [opus]; rtpengine with codec transcode/mask flags). The client checks the
# payload type, size and energy of what arrives on each side. Results: *-transcode-CALLS.json
# and rows-transcode.md. RTPENGINE_LOG_LEVEL=7 keeps rtpengine's debug log (its transcoder
# set-up lines) in bench/out/media/rtpengine.log; not for recorded runs. ENGINES=gatewayd
# skips rtpengine (for loads it cannot carry on one CPU). BRIDGE_CPUS=0,1 gives both engines
# both CPUs (the load client stays on CPU 1) and MEDIA_WORKERS=N sets gatewayd's worker
# threads (default: one per CPU it may use, so one under the default BRIDGE_CPUS=0).
#
# Results (one JSON line per engine) go to bench/out/media/; the last line printed is a
# markdown table row for RESULTS.md (commit, load average, ratio to rtpengine), also appended
# to bench/out/media/rows.md. Record figures from an otherwise idle machine: the row carries
# the load average so a busy box shows. Needs: rtpengine-daemon (optional, for the ratio).
# MEDIA_BENCH_BIN=DIR runs binaries built before (say of an older commit, for a before/after
# in one sitting) instead of building; MEDIA_BENCH_COMMIT names them in the row. PERF=1 keeps
# a `perf record -g` of the gatewayd bridge over the middle of its window in
# bench/out/media/perf-gatewayd.data (that run's CPU figures include perf's cost).
set -euo pipefail
CALLS=${1:-500}
SECS=${2:-30}
MODE=${MODE:-bridge}
case "$MODE" in
  bridge) TAG=""; BRIDGE_CODEC=""; export MEDIA_LOAD_CODEC=pcmu ;;
  transcode) TAG="transcode-"; BRIDGE_CODEC="opus"; export MEDIA_LOAD_CODEC=opus ;;
  *) echo "MODE is bridge or transcode" >&2; exit 2 ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/../out/media
mkdir -p "$OUT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../../target/bench-media}
if [ -n "${MEDIA_BENCH_BIN:-}" ]; then
  BIN=$MEDIA_BENCH_BIN
  COMMIT=${MEDIA_BENCH_COMMIT:-prebuilt}
else
  (cd "$HERE" && cargo build --release --quiet)
  BIN=$CARGO_TARGET_DIR/release
  COMMIT=$(git -C "$HERE" rev-parse --short HEAD)
  git -C "$HERE" diff --quiet HEAD -- . ../../gatewayd 2>/dev/null || COMMIT="$COMMIT-dirty"
fi
G_JSON=$OUT/gatewayd-$TAG$CALLS.json
R_JSON=$OUT/rtpengine-$TAG$CALLS.json
ROWS=$OUT/rows${TAG:+-transcode}.md
rm -f "$G_JSON" "$R_JSON"
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

echo "== gatewayd media bridge ($MODE), $CALLS calls, ${SECS}s, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
BRIDGE_CPUS=${BRIDGE_CPUS:-0}
taskset -c "$BRIDGE_CPUS" "$BIN/media-bridge" 127.0.0.1:7700 ${BRIDGE_CODEC:+"$BRIDGE_CODEC"} > "$OUT/bridge.log" 2>&1 &
BPID=$!; PIDS+=("$BPID")
wait_for 10 grep -q ready "$OUT/bridge.log"
if [ "${PERF:-0}" = 1 ]; then
  (sleep $((SECS / 2)); perf record -q -F 499 -g -p "$BPID" -o "$OUT/perf-gatewayd.data" -- sleep $((SECS / 3 + 1)) > /dev/null 2>&1) &
fi
taskset -c 1 "$BIN/media-load" gatewayd 127.0.0.1:7700 "$BPID" "$CALLS" "$SECS" | tee "$G_JSON"
kill "$BPID"; wait "$BPID" 2>/dev/null || true

if [[ " ${ENGINES:-gatewayd rtpengine} " != *" rtpengine "* ]]; then
  echo "rtpengine skipped (ENGINES=$ENGINES)" >&2
elif command -v rtpengine > /dev/null; then
  echo "== rtpengine (userspace, $MODE), $CALLS calls, ${SECS}s, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  taskset -c "$BRIDGE_CPUS" rtpengine --foreground --log-stderr --log-level="${RTPENGINE_LOG_LEVEL:-3}" --table=-1 --interface=127.0.0.1 \
    --listen-ng=127.0.0.1:2223 --port-min=30000 --port-max=39999 --delete-delay=0 \
    --pidfile="$OUT/rtpengine.pid" > "$OUT/rtpengine.log" 2>&1 &
  RPID=$!; PIDS+=("$RPID")
  wait_for 30 sh -c 'ss -lun | grep -q 127.0.0.1:2223'
  taskset -c 1 "$BIN/media-load" rtpengine 127.0.0.1:2223 "$RPID" "$CALLS" "$SECS" | tee "$R_JSON"
  kill "$RPID"; wait "$RPID" 2>/dev/null || true
else
  echo "rtpengine not installed (apt-get install --no-install-recommends rtpengine-daemon)" >&2
fi

ROW=$("$BIN/media-row" "$COMMIT" "$G_JSON" "$R_JSON")
HEADER_FLAG=--header${TAG:+-transcode}
[ -s "$ROWS" ] || "$BIN/media-row" "$HEADER_FLAG" > "$ROWS"
echo "$ROW" >> "$ROWS"
"$BIN/media-row" "$HEADER_FLAG"
echo "$ROW"
