#!/usr/bin/env bash
# REGISTER with digest over WSS: CPU per REGISTER, latency and errors at a fixed rate, for
# gatewayd (release, bench/calls/profile.toml) and Kamailio 5.6 as the WSS registrar
# (bench/calls/kamailio.cfg, the seed deployment's front). AGENTS load agents (register-load,
# one WSS connection each, current-thread, on CPU 1) register once, then re-register RATE
# times a second in total for SECONDS, in each mode of MODES:
#   reuse  credentials for the last nonce with the next nonce-count (a refused reuse is
#          answered 401 and counted as rechallenged);
#   fresh  every REGISTER without credentials first: 401, then with credentials.
# Server CPU is utime + stime of all its processes over the measured window (read by the
# client at the window's edges), per REGISTER completed in it. Server on CPU 0.
#
#   bench/calls/register.sh [RATE=2000] [SECONDS=20] [AGENTS=200]
#   TARGETS="gatewayd kamailio" MODES="reuse fresh" PORT_BASE=29000 PERF=1
#   GATEWAYD=path COMMIT=abc1234 (another build, and the commit it was built from)
#
# Files land in bench/out/register/<stamp>/; one JSON line per target and mode goes to stdout
# and to bench/out/register/results.jsonl. PERF=1 records `perf record -g` of the server in
# each mode (<target>-<mode>.perf.data; the run's CPU figures then include perf's cost).
set -euo pipefail
RATE=${1:-2000}
SECS=${2:-20}
AGENTS=${3:-200}
TARGETS=${TARGETS:-gatewayd kamailio}
MODES=${MODES:-reuse fresh}
BASE=${PORT_BASE:-29000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUTROOT=$ROOT/bench/out/register
RUN=$OUTROOT/$(date +%Y%m%d-%H%M%S)-r$RATE
mkdir -p "$RUN"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ -n "${GATEWAYD:-}" ] || (cd "$ROOT" && cargo build --release --quiet -p gatewayd)
(cd "$HERE" && cargo build --release --quiet)
GATEWAYD=${GATEWAYD:-$CARGO_TARGET_DIR/release/gatewayd}
CLIENT=$CARGO_TARGET_DIR/release/register-load

HTTPS=$((BASE + 443)) SIP=$((BASE + 60)) UPSTREAM=$((BASE + 80)) ADMIN=$((BASE + 90)) TURN=$((BASE + 78))
KAM_SIP=$((BASE + 160)) KAM_WSS=$((BASE + 543))
FIRST=6000
LAST=$((FIRST + AGENTS - 1))
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
listening() { ss -Hlnt "sport = :$1" | grep -q .; }
listening_udp() { ss -Hlnu "sport = :$1" | grep -q .; }
tree_of() { echo "$1" $(pgrep -P "$1" || true); }

start_gatewayd() {
  sed -e "s/BENCH_HTTPS/$HTTPS/g; s/BENCH_SIP/$SIP/; s/BENCH_AGENTS/$FIRST-$LAST/; s/BENCH_UPSTREAM/$UPSTREAM/; s/BENCH_TURN/$TURN/; s/BENCH_ADMIN/$ADMIN/" \
    "$HERE/profile.toml" > "$RUN/gatewayd.toml"
  mkdir -p "$RUN/state"
  taskset -c 0 "$GATEWAYD" run --profile "$RUN/gatewayd.toml" --state-dir "$RUN/state" > "$RUN/gatewayd.log" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  wait_for 30 listening "$HTTPS"
  WSS=$HTTPS
}

start_kamailio() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$RUN/kam-key.pem" -out "$RUN/kam-cert.pem" 2> /dev/null
  printf '[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = %s\ncertificate = %s\n' \
    "$RUN/kam-key.pem" "$RUN/kam-cert.pem" > "$RUN/kam-tls.cfg"
  sed -e "s/KAM_SIP/$KAM_SIP/; s/KAM_WSS/$KAM_WSS/; s/KAM_NG/$((BASE + 223))/; s|KAM_TLS_CFG|$RUN/kam-tls.cfg|; s/KAM_SECRET/$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')/" \
    "$HERE/kamailio.cfg" > "$RUN/kamailio.cfg"
  taskset -c 0 kamailio -f "$RUN/kamailio.cfg" -DD -E -m 512 -M 32 -P "$RUN/kamailio.pid" -Y "$RUN" > "$RUN/kamailio.log" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  wait_for 30 listening "$KAM_WSS"
  wait_for 10 listening_udp "$KAM_SIP"
  WSS=$KAM_WSS
}

run_target() {
  local target=$1
  "start_$target"
  local procs; procs=$(tree_of "$SERVER" | tr ' ' ,)
  for mode in $MODES; do
    echo "== $target $mode: $AGENTS agents, $RATE REGISTER/s for $SECS s" >&2
    local perf=""
    if [ -n "${PERF:-}" ]; then
      perf record -q -F 999 -g -p "$procs" -o "$RUN/$target-$mode.perf.data" 2> "$RUN/$target-$mode.perf.err" &
      perf=$!
    fi
    local line
    line=$(taskset -c 1 "$CLIENT" --url "wss://127.0.0.1:$WSS/ws" --origin "https://127.0.0.1:$WSS" --dns "$FIRST-$LAST" \
      --mode "$mode" --rate "$RATE" --seconds "$SECS" --server-pids "$procs" --clk-tck "$(getconf CLK_TCK)" \
      2> "$RUN/$target-$mode.err" | tee "$RUN/$target-$mode.out" | tail -n1) || true
    case "$line" in
      \{*) ;;
      *) echo "$target $mode: the client gave no result (see $RUN/$target-$mode.err)" >&2; line='{"failed":true}' ;;
    esac
    if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" 2> /dev/null || true; fi
    line=$(printf '{"target":"%s","commit":"%s","load":"%s",%s' "$target" "${COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD)}" \
      "$(cut -d' ' -f1-3 /proc/loadavg)" "${line#\{}")
    echo "$line" | tee -a "$OUTROOT/results.jsonl" "$RUN/results.jsonl"
  done
  kill -TERM "$SERVER"; wait "$SERVER" 2> /dev/null || true
}

echo "commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, $(uptime)" >&2
for t in $TARGETS; do run_target "$t"; done
