#!/usr/bin/env bash
# Call setups per second through the B2BUA: sipp plays the SIP server and calls DNs in
# sequence (-inf) at RATE calls/s; AGENTS load agents (calls-agent, one WSS connection each,
# digest-registered) answer with 180 + 200. The same load then goes through Kamailio 5.6 as a
# WSS registrar/proxy (the seed deployment's front; with rtpengine in media mode) for the
# anchor. Server on CPU 0, sipp and the agents on CPU 1. Loopback only, on ports of its own
# (PORT_BASE + offsets; media ports 20000-26999, below the ephemeral range).
#
#   bench/calls/run.sh [RATE=200] [SECONDS=30] [AGENTS=500] [MODE=signalling|media]
#   TARGETS="gatewayd kamailio kamailio_rtpengine" (default: gatewayd and the mode's anchor)
#   HOLD_MS=1000 PORT_BASE=27000 GATEWAYD=path/to/gatewayd PERF=1
#
# Each run's files (logs, sipp stats, response times) land in bench/out/calls/<stamp>/; one
# JSON line per target goes to stdout and to bench/out/calls/results.jsonl.
set -euo pipefail
RATE=${1:-200}
SECS=${2:-30}
AGENTS=${3:-500}
MODE=${4:-signalling}
# The anchor doing the same job: a proxy for signalling only, a proxy with rtpengine for media.
if [ "$MODE" = media ]; then TARGETS=${TARGETS:-gatewayd kamailio_rtpengine}; else TARGETS=${TARGETS:-gatewayd kamailio}; fi
HOLD_MS=${HOLD_MS:-1000}
BASE=${PORT_BASE:-27000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUTROOT=$ROOT/bench/out/calls
RUN=$OUTROOT/$(date +%Y%m%d-%H%M%S)-$MODE-r$RATE
mkdir -p "$RUN"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[ -n "${GATEWAYD:-}" ] || (cd "$ROOT" && cargo build --release --quiet -p gatewayd)
(cd "$HERE" && cargo build --release --quiet)
GATEWAYD=${GATEWAYD:-$CARGO_TARGET_DIR/release/gatewayd} # GATEWAYD=path runs another build
AGENT=$CARGO_TARGET_DIR/release/calls-agent

HTTPS=$((BASE + 443)) SIP=$((BASE + 60)) UPSTREAM=$((BASE + 80)) ADMIN=$((BASE + 90)) TURN=$((BASE + 78))
KAM_SIP=$((BASE + 160)) KAM_WSS=$((BASE + 543)) KAM_NG=$((BASE + 223))
FIRST=6000
LAST=$((FIRST + AGENTS - 1))
CALLS=$((RATE * SECS))
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
listening() { ss -Hlnt "sport = :$1" | grep -q .; }
listening_udp() { ss -Hlnu "sport = :$1" | grep -q .; }

# CPU seconds (user + system, all threads) of the given processes.
cpu_of() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  num "scale=3; $total / $(getconf CLK_TCK)"
}
rss_of() { # KiB, proportional set size summed (Kamailio's processes share their memory)
  local total=0 p
  for p in "$@"; do
    total=$((total + $(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
num() { printf '%.4f' "$(echo "$1" | bc)"; } # bc arithmetic, printed as a JSON number
tree_of() { echo "$1" $(pgrep -P "$1" || true); }

{ echo SEQUENTIAL; seq "$FIRST" "$LAST"; } > "$RUN/dns.csv"

start_gatewayd() {
  sed -e "s/BENCH_HTTPS/$HTTPS/g; s/BENCH_SIP/$SIP/; s/BENCH_AGENTS/$FIRST-$LAST/; s/BENCH_UPSTREAM/$UPSTREAM/; s/BENCH_TURN/$TURN/; s/BENCH_ADMIN/$ADMIN/" \
    "$HERE/profile.toml" > "$RUN/gatewayd.toml"
  mkdir -p "$RUN/state"
  taskset -c 0 "$GATEWAYD" run --profile "$RUN/gatewayd.toml" --state-dir "$RUN/state" > "$RUN/gatewayd.log" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  wait_for 30 listening "$HTTPS"
  wait_for 10 listening_udp "$SIP"
  WSS=$HTTPS SIP_TARGET=$SIP
}

EXTRA=""
start_kamailio() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$RUN/kam-key.pem" -out "$RUN/kam-cert.pem" 2> /dev/null
  printf '[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = %s\ncertificate = %s\n' \
    "$RUN/kam-key.pem" "$RUN/kam-cert.pem" > "$RUN/kam-tls.cfg"
  sed -e "s/KAM_SIP/$KAM_SIP/; s/KAM_WSS/$KAM_WSS/; s/KAM_NG/$KAM_NG/; s|KAM_TLS_CFG|$RUN/kam-tls.cfg|; s/KAM_SECRET/$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')/" \
    "$HERE/kamailio.cfg" > "$RUN/kamailio.cfg"
  taskset -c 0 kamailio ${KAM_DEFINE:-} -f "$RUN/kamailio.cfg" -DD -E -m 512 -M 32 -P "$RUN/kamailio.pid" -Y "$RUN" > "$RUN/kamailio.log" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  wait_for 30 listening "$KAM_WSS"
  wait_for 10 listening_udp "$KAM_SIP"
  WSS=$KAM_WSS SIP_TARGET=$KAM_SIP
}

# Kamailio with rtpengine (userspace, ports below the ephemeral range) converting the media.
start_kamailio_rtpengine() {
  taskset -c 0 rtpengine --foreground --log-stderr --log-level=4 --table=-1 --interface=127.0.0.1 \
    --listen-ng="127.0.0.1:$KAM_NG" --port-min=24000 --port-max=26999 --delete-delay=0 \
    --pidfile="$RUN/rtpengine.pid" > "$RUN/rtpengine.log" 2>&1 &
  local rtp=$!; PIDS+=("$rtp")
  wait_for 10 listening_udp "$KAM_NG"
  KAM_DEFINE="-A WITH_RTPENGINE" start_kamailio
  EXTRA=$rtp
}

# Percentile P (0-100) of a sorted column of numbers on stdin.
percentile() { awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "null"; exit } i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; print v[i] }'; }

run_target() {
  local target=$1 dir=$RUN/$1
  mkdir -p "$dir"
  echo "== $target: $AGENTS agents ($MODE), $CALLS calls at $RATE/s, talk ${HOLD_MS} ms" >&2
  "start_$target"
  local procs; procs="$(tree_of "$SERVER") $EXTRA"
  local rss_idle; rss_idle=$(rss_of $procs)
  taskset -c 1 "$AGENT" --url "wss://127.0.0.1:$WSS/ws" --origin "https://127.0.0.1:$WSS" --dns "$FIRST-$LAST" --mode "$MODE" \
    > "$dir/agent.out" 2> "$dir/agent.err" &
  local agent=$!; PIDS+=("$agent")
  wait_for 180 grep -qs '^registered' "$dir/agent.out"
  grep '^registered' "$dir/agent.out" >&2
  procs="$(tree_of "$SERVER") $EXTRA"
  local rss0 cpu0 t0 cpu1 t1 rss1
  rss0=$(rss_of $procs)
  cpu0=$(cpu_of $procs); t0=$(date +%s.%N)
  local agent_cpu0; agent_cpu0=$(cpu_of "$agent")
  local perf=""
  if [ -n "${PERF:-}" ]; then # PERF=1: a profile of the server during the calls (perf report -i ...)
    perf record -q -F 499 --call-graph dwarf,16384 -p "$(echo $procs | tr ' ' ,)" -o "$dir/perf.data" 2> "$dir/perf.err" &
    perf=$!
  fi
  # sipp's own timeouts bound the run; -rtt_freq 1 writes every response time.
  (cd "$dir" && taskset -c 1 sipp "127.0.0.1:$SIP_TARGET" -sf "$HERE/sipp/uac.xml" -inf "$RUN/dns.csv" \
    -i 127.0.0.1 -p "$UPSTREAM" -mp $((BASE + 700)) -r "$RATE" -m "$CALLS" -l $((RATE * 10)) -d "$HOLD_MS" -nostdin \
    -timeout $((SECS * 3 + 30))s -recv_timeout 10000 -max_recv_loops 10000 \
    -trace_stat -stf "$dir/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 -trace_err -error_file "$dir/errors.log" \
    > "$dir/sipp.out" 2>&1) || true
  cpu1=$(cpu_of $procs); t1=$(date +%s.%N)
  local agent_cpu; agent_cpu=$(num "$(cpu_of "$agent") - $agent_cpu0")
  if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" 2> /dev/null || true; fi
  rss1=$(rss_of $procs)
  kill -TERM "$agent"; wait "$agent" 2> /dev/null || true
  local counters; counters=$(tail -n1 "$dir/agent.out")
  kill -TERM "$SERVER"; wait "$SERVER" 2> /dev/null || true
  if [ -n "$EXTRA" ]; then kill -TERM "$EXTRA"; wait "$EXTRA" 2> /dev/null || true; EXTRA=""; fi

  # sipp's cumulative counters: the last line of the statistics file.
  local header last ok failed
  header=$(head -n1 "$dir/stat.csv"); last=$(tail -n1 "$dir/stat.csv")
  col() { awk -F';' -v h="$header" -v l="$last" -v name="$1" 'BEGIN { n = split(h, H, ";"); split(l, L, ";"); for (i = 1; i <= n; i++) if (H[i] == name) print L[i] }'; }
  ok=$(col 'SuccessfulCall(C)'); failed=$(col 'FailedCall(C)')
  # Response times (ms, INVITE -> 200) and the moments the 200s arrived.
  local rtt; rtt=$(ls "$dir"/*_rtt.csv | head -n1)
  awk -F';' 'NR > 1 && $3 ~ /1/ { print $2 }' "$rtt" | sort -g > "$dir/setup_ms.txt"
  local n p50 p99 max span rate_achieved
  n=$(wc -l < "$dir/setup_ms.txt")
  p50=$(percentile 50 < "$dir/setup_ms.txt"); p99=$(percentile 99 < "$dir/setup_ms.txt"); max=$(tail -n1 "$dir/setup_ms.txt")
  span=$(awk -F';' 'NR > 1 { t = $1 / 1000; if (min == "" || t < min) min = t; if (t > mx) mx = t } END { printf "%.3f", mx - min }' "$rtt")
  rate_achieved=$(num "scale=2; ($n - 1) / $span")
  local cpu cpu_per_call
  cpu=$(num "scale=3; $cpu1 - $cpu0")
  cpu_per_call=$(num "scale=4; 1000 * $cpu / $ok")
  local line
  line=$(printf '{"target":"%s","mode":"%s","agents":%s,"rate":%s,"calls":%s,"talk_ms":%s,"successful":%s,"failed":%s,"setups_per_s":%s,"setup_ms_p50":%s,"setup_ms_p99":%s,"setup_ms_max":%s,"cpu_s":%s,"cpu_ms_per_call":%s,"wall_s":%s,"pss_idle_kib":%s,"pss_registered_kib":%s,"pss_end_kib":%s,"agent_cpu_s":%s,"load":"%s","agent":%s}' \
    "$target" "$MODE" "$AGENTS" "$RATE" "$CALLS" "$HOLD_MS" "${ok:-0}" "${failed:-0}" "$rate_achieved" "$p50" "$p99" "$max" "$cpu" "$cpu_per_call" \
    "$(num "scale=2; ($t1 - $t0) / 1")" "$rss_idle" "$rss0" "$rss1" "$agent_cpu" "$(cut -d' ' -f1-3 /proc/loadavg)" "${counters:-null}")
  echo "$line" | tee -a "$OUTROOT/results.jsonl"
}

echo "commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, $(uptime)" >&2
for t in $TARGETS; do run_target "$t"; done
