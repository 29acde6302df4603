#!/usr/bin/env bash
# TURN relay benchmark: ALLOCATIONS allocations (REST credentials, a permission and a channel
# each toward a peer on 127.0.0.1), each carrying ChannelData at 50 packets/s with 172-byte
# payloads (G.711, 20 ms) that the peer echoes back through the relay, for SECONDS; first
# against coturn (the anchor), then against gatewayd's TURN server on a copy of the lab
# profile, in the same run. Server on CPU 0, load client (one thread: all client sockets and
# the peer) on CPU 1. Loopback only.
#
#   bench/turn/run.sh [ALLOCATIONS=500] [SECONDS=30]
#   TRANSPORT=udp|tcp|tls  client <-> server transport (relay side is always UDP); tls: TURN
#                       over TLS (coturn's tls-listening-port, gatewayd's turn.listen_tls),
#                       both serving the same throwaway P-256 certificate made for the run
#   CHURN=N             N allocate/delete cycles after the relay phase (allocations/s, RSS after)
#   WINDOW=64           allocations (and deletes, cycles) in flight at once
#   TARGETS="coturn gatewayd"   COTURN_THREADS=N (coturn's relay-threads; default 1, the one
#                       CPU it is pinned to, as gatewayd sizes its runtime; "default" leaves
#                       coturn's own choice, one per CPU of the machine)
#   RECORD=1            append the entry to bench/RESULTS.md once both servers ran;
#                       RECORD=baseline also records coturn alone when gatewayd fails; 0 never
#   IDLE_WAIT=S         before each server, wait up to S seconds for both CPUs to be idle (other
#                       builds and tests on a shared machine skew the figures; the entry shows
#                       the other work on CPU 0 either way)
#   CONTEND=1           a busy loop shares CPU 0 with each server during its run (the same for
#                       both): how each copes when its CPU stalls
#   GATEWAYD=path       another gatewayd build (then nothing is built); GATEWAYD_REV=label
#                       names the commit it was built from in the entry
#
# Each run's files (configs, logs, one JSON result per server, the entry) land in
# bench/out/turn/<stamp>/. Exit status: 0 when every target ran, 1 otherwise.
set -euo pipefail
ALLOCS=${1:-500}
SECS=${2:-30}
TRANSPORT=${TRANSPORT:-udp}
CHURN=${CHURN:-0}
WINDOW=${WINDOW:-64}
TARGETS=${TARGETS:-coturn gatewayd}
# coturn sizes its relay threads by the machine's CPUs, gatewayd's runtime by the CPUs it may
# run on; pinned to one CPU, coturn gets one relay thread too unless told otherwise.
COTURN_THREADS=${COTURN_THREADS:-1}
RECORD=${RECORD:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=$ROOT/bench/out/turn/$(date +%Y%m%d-%H%M%S)-$TRANSPORT-$ALLOCS
mkdir -p "$RUN"
# Ports of its own, so a lab gateway (or a test) running at the same time cannot collide with
# the benchmark: gatewayd's listeners are the lab profile's plus PORT_SHIFT (TURN on 13478,
# admin on 19090, ...), coturn listens on 23478, and both relay from 45000 up (the lab range
# 43000-43999 moved, widened when the run needs more than 1000 ports). The client's sockets
# live on 127.0.0.2, ports 10000 up.
PORT_SHIFT=${PORT_SHIFT:-10000}
COTURN_PORT=${COTURN_PORT:-23478}
COTURN_TLS_PORT=${COTURN_TLS_PORT:-25349}
RELAY_FIRST=45000
RELAY_LAST=$((ALLOCS + WINDOW > 900 ? RELAY_FIRST + 2 * (ALLOCS + WINDOW) : RELAY_FIRST + 999))
# Churn: a server may hold a deleted allocation's port a while (coturn does, and answers 508
# when the range runs dry), so churn runs give both servers 20 000 ports.
[ "$CHURN" = 0 ] || RELAY_LAST=$((RELAY_FIRST + 19999))

[ -n "${GATEWAYD:-}" ] || (cd "$ROOT" && cargo build --release --quiet -p gatewayd)
GATEWAYD=${GATEWAYD:-$ROOT/target/release/gatewayd}
(cd "$HERE" && CARGO_TARGET_DIR=$ROOT/target/bench-turn cargo build --release --quiet)
BIN=$ROOT/target/bench-turn/release
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
git -C "$ROOT" diff --quiet HEAD -- bench/turn gatewayd 2> /dev/null || COMMIT="$COMMIT-dirty"
COMMIT=${GATEWAYD_REV:-$COMMIT}
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
listening_udp() { ss -Hlnu "sport = :$1" | grep -q .; }
listening_tcp() { ss -Hlnt "sport = :$1" | grep -q .; }
alive() { kill -0 "$1" 2> /dev/null; }
port_free() { # port_free PORT WHO: refuse to start over someone else's listener
  if listening_udp "$1" || listening_tcp "$1"; then
    echo "port $1 is taken (for $2): $(ss -Hlnup "sport = :$1" | head -n1)" >&2
    return 1
  fi
}
FLAGS=(--window "$WINDOW" --relay-ports "$RELAY_FIRST-$RELAY_LAST")
[ "$TRANSPORT" = tcp ] && FLAGS+=(--tcp)
[ "$TRANSPORT" = tls ] && FLAGS+=(--tls)
if [ "$TRANSPORT" = tls ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2> /dev/null
fi
[ "$CHURN" != 0 ] && FLAGS+=(--churn "$CHURN")

# Runs the load against the server (PID $SERVER) at $1 as target $2: JSON in $RUN/$2.json.
load() {
  echo "== $2: $ALLOCS allocations over $TRANSPORT, ${SECS}s, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  local rc=0 hog=""
  if [ "${CONTEND:-0}" = 1 ]; then
    taskset -c 0 bash -c 'while :; do :; done' &
    hog=$!; PIDS+=("$hog")
  fi
  taskset -c 1 "$BIN/turn-load" "$2" "$1" "$SERVER" "$ALLOCS" "$SECS" "${FLAGS[@]}" > "$RUN/$2.json" 2> >(tee "$RUN/$2.load.log" >&2) || rc=$?
  [ -z "$hog" ] || { kill "$hog"; wait "$hog" 2> /dev/null || true; }
  alive "$SERVER" || { echo "$2 exited during the run; its log: $RUN/$2.log" >&2; rc=1; }
  return $rc
}

stop() { # SIGTERM, then SIGKILL after 10 s
  kill -TERM "$1" 2> /dev/null || return 0
  local end=$((SECONDS + 10))
  while alive "$1" && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
  kill -KILL "$1" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
}

# The run_* functions run under `||`, where errexit does not apply: each step checks itself.
run_coturn() {
  port_free "$COTURN_PORT" coturn || return 1
  # The anchor as a TURN-only relay for browsers: REST credentials from the lab secret, relays
  # on 127.0.0.1 in the same range, loopback peers allowed (coturn >= 4.5.2 refuses them by
  # default), no TLS/DTLS listeners (the run is UDP or TCP only), no CLI, no RFC 5780 second
  # port. It logs every session to its file, as gatewayd logs every allocation's end.
  cat > "$RUN/turnserver.conf" << EOF
listening-ip=127.0.0.1
listening-port=$COTURN_PORT
relay-ip=127.0.0.1
min-port=$RELAY_FIRST
max-port=$RELAY_LAST
realm=gatewayd-lab
use-auth-secret
static-auth-secret=lab-turn-secret
allowed-peer-ip=127.0.0.1
allow-loopback-peers
no-multicast-peers
no-cli
no-tls
no-dtls
no-rfc5780
no-stun-backward-compatibility
userdb=$RUN/turndb
pidfile=$RUN/turnserver.pid
log-file=$RUN/coturn.log
simple-log
no-stdout-log
EOF
  [ "$COTURN_THREADS" = default ] || echo "relay-threads=$COTURN_THREADS" >> "$RUN/turnserver.conf"
  local port=$COTURN_PORT
  if [ "$TRANSPORT" = tls ]; then
    port=$COTURN_TLS_PORT
    port_free "$port" "coturn's TLS" || return 1
    sed -i '/^no-tls$/d' "$RUN/turnserver.conf"
    printf 'tls-listening-port=%s\ncert=%s\npkey=%s\nno-tlsv1\nno-tlsv1_1\n' "$port" "$RUN/cert.pem" "$RUN/key.pem" >> "$RUN/turnserver.conf"
  fi
  taskset -c 0 turnserver -c "$RUN/turnserver.conf" > "$RUN/coturn.stdout" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  wait_for 20 listening_udp "$COTURN_PORT" || { tail -n 20 "$RUN/coturn.log" "$RUN/coturn.stdout" >&2; stop "$SERVER"; return 1; }
  local rc=0
  [ "$TRANSPORT" != tls ] || wait_for 5 listening_tcp "$port" || { tail -n 20 "$RUN/coturn.log" >&2; stop "$SERVER"; return 1; }
  load "127.0.0.1:$port" coturn || rc=$?
  stop "$SERVER"
  return $rc
}

# The lab profile with the bench's peer allowed (lab mode lets loopback in), its listeners
# shifted, relays in the range above, and room for every allocation: they all come from one
# address, and the lab limits (32 per source) are for browsers. coturn has no such limit by
# default.
make_profile() {
  local room=$(((ALLOCS + WINDOW) * 2 > 4000 ? (ALLOCS + WINDOW) * 2 : 4000))
  perl -pe "s/127\.0\.0\.1:(\d+)/'127.0.0.1:' . (\$1 + $PORT_SHIFT)/ge" "$ROOT/profiles/lab.toml" | awk -v relay="\"$RELAY_FIRST-$RELAY_LAST\"" -v room="$room" -v tls_files="$([ "$TRANSPORT" = tls ] && echo 1 || echo 0)" '
    function tls() { print "source = \"files\""; print "certificate = \"cert.pem\""; print "key = \"key.pem\"" }
    function limits() { print "max_allocations = " room; print "per_source = " room }
    /^\[/ { section = $0 }
    tls_files && /^\[tls\]$/ { print; tls(); next }
    tls_files && section == "[tls]" && /^(source|certificate|key)[ =]/ { next }
    /^\[turn\]$/ { print; print "allowed_peers = [\"127.0.0.1/32\"]"; print "relay_ports = " relay; next }
    /^\[turn\.limits\]$/ { print; limits(); had_limits = 1; next }
    section == "[turn]" && /^(allowed_peers|relay_ports)[ =]/ { next }
    section == "[turn.limits]" && /^(max_allocations|per_source)[ =]/ { next }
    { print }
    END { if (!had_limits) { print ""; print "[turn.limits]"; limits() } }
  ' > "$RUN/gatewayd.toml"
  # Where the daemon will answer: its first TURN listener and the admin endpoint (readiness).
  TURN_ADDR=$(awk -F'"' '/^listen_udp *=/ { print $2; exit }' "$RUN/gatewayd.toml")
  [ "$TRANSPORT" = tcp ] && TURN_ADDR=$(awk -F'"' '/^listen_tcp *=/ { print $2; exit }' "$RUN/gatewayd.toml")
  [ "$TRANSPORT" = tls ] && TURN_ADDR=$(awk -F'"' '/^listen_tls *=/ { print $2; exit }' "$RUN/gatewayd.toml")
  ADMIN=$(awk -F'"' '/^admin *=/ { print $2; exit }' "$RUN/gatewayd.toml")
  [ -n "$TURN_ADDR" ] && [ -n "$ADMIN" ]
}

run_gatewayd() {
  make_profile || return 1
  "$GATEWAYD" validate "$RUN/gatewayd.toml" >&2 || { echo "gatewayd refuses the bench profile $RUN/gatewayd.toml" >&2; return 1; }
  port_free "${TURN_ADDR##*:}" "gatewayd's TURN" || return 1
  port_free "${ADMIN##*:}" "gatewayd's admin endpoint" || return 1
  mkdir -p "$RUN/state"
  taskset -c 0 "$GATEWAYD" run --profile "$RUN/gatewayd.toml" --state-dir "$RUN/state" > "$RUN/gatewayd.log" 2>&1 &
  SERVER=$!; PIDS+=("$SERVER")
  # Ready once the admin endpoint answers; TURN then either listens or the run says it does not.
  if ! wait_for 30 curl -fsS -o /dev/null "http://$ADMIN/health"; then
    echo "gatewayd did not come up; the end of its log ($RUN/gatewayd.log):" >&2
    tail -n 20 "$RUN/gatewayd.log" >&2
    stop "$SERVER"
    return 1
  fi
  local proto=udp; [ "$TRANSPORT" = udp ] || proto=tcp
  if ! wait_for 5 "listening_$proto" "${TURN_ADDR##*:}"; then
    echo "gatewayd's TURN does not listen on $TURN_ADDR/$proto (the daemon runs; [turn] has no server yet?)" >&2
    printf '{"server":"gatewayd","error":"TURN does not listen on %s/%s"}\n' "$TURN_ADDR" "$proto" > "$RUN/gatewayd.json"
    stop "$SERVER"
    return 1
  fi
  local rc=0
  load "$TURN_ADDR" gatewayd || rc=$?
  stop "$SERVER"
  return $rc
}

cpu_busy_pct() { # share of both CPUs busy over $1 seconds
  local b0 t0 b1 t1
  read -r b0 t0 < <(awk '/^cpu / { print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8 }' /proc/stat)
  sleep "$1"
  read -r b1 t1 < <(awk '/^cpu / { print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8 }' /proc/stat)
  echo $(((b1 - b0) * 100 / (t1 - t0 + 1)))
}
wait_idle() {
  [ "${IDLE_WAIT:-0}" -gt 0 ] || return 0
  local end=$((SECONDS + IDLE_WAIT)) pct
  while pct=$(cpu_busy_pct 5) && [ "$pct" -ge 5 ]; do
    [ "$SECONDS" -lt "$end" ] || { echo "machine still $pct % busy after ${IDLE_WAIT}s; running anyway" >&2; return 0; }
  done
}

MACHINE_CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "commit $COMMIT, $(nproc) CPUs ($MACHINE_CPU), $(uptime)" >&2
STATUS=0
for t in $TARGETS; do
  wait_idle
  "run_$t" || { STATUS=1; echo "== $t: FAILED (see above and $RUN)" >&2; }
done

COTURN_VERSION=$(turnserver --version 2> /dev/null | head -n1 || echo "?")
THREADS="coturn relay-threads=$COTURN_THREADS"
[ "$COTURN_THREADS" != default ] || THREADS="$THREADS (its own choice: one per CPU of the machine, $(nproc))"
TCP_NOTE=""
[ "${CONTEND:-0}" = 1 ] && TCP_NOTE=" **A busy loop shared CPU 0 with each server during its run** (CONTEND=1)."
[ "$TRANSPORT" = udp ] || TCP_NOTE="$TCP_NOTE Over $TRANSPORT the client times receipts when it reads them (no kernel timestamps on streams)."
[ "$TRANSPORT" = tls ] && TCP_NOTE="$TCP_NOTE TLS: the same throwaway P-256 certificate for both servers, a fresh full handshake per allocation (no resumption); negotiated: coturn $(grep -o '"tls": *"[^"]*"' "$RUN/coturn.json" 2> /dev/null | cut -d'"' -f4), gatewayd $(grep -o '"tls": *"[^"]*"' "$RUN/gatewayd.json" 2> /dev/null | cut -d'"' -f4)."
HEADING="## $(date +%Y-%m-%d) — TURN relay against coturn (\`bench/turn/run.sh $ALLOCS $SECS\`, $TRANSPORT), commit $COMMIT"
MACHINE="Machine: $(nproc) CPUs ($MACHINE_CPU), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r | cut -d- -f1); coturn $COTURN_VERSION (Debian), $THREADS. Client and server share the $(nproc) cores: the server is pinned to CPU 0, the load client (all allocations and the echoing peer, one thread) to CPU 1; on loopback the sender's system call also runs the receiver's network stack, so part of each server's receive cost is charged to the client and part of the client's to the server, alike for both. $ALLOCS allocations x 50 packets/s each way x 172-byte payloads, ${SECS} s measured after 2 s of warm-up; 1-min load average at the start: $(cut -d' ' -f1 /proc/loadavg).$TCP_NOTE Run files: \`bench/out/turn/$(basename "$RUN")\`."
"$BIN/turn-row" "$HEADING" "$MACHINE" "$RUN/coturn.json" "$RUN/gatewayd.json" > "$RUN/entry.md"
echo >&2
cat "$RUN/entry.md"
both_ran() { grep -q '"established"' "$RUN/coturn.json" 2> /dev/null && grep -q '"established"' "$RUN/gatewayd.json" 2> /dev/null; }
coturn_ran() { grep -q '"established"' "$RUN/coturn.json" 2> /dev/null; }
if { [ "$RECORD" = 1 ] && both_ran; } || { [ "$RECORD" = baseline ] && coturn_ran; }; then
  { echo; cat "$RUN/entry.md"; } >> "$ROOT/bench/RESULTS.md"
  echo "(appended to bench/RESULTS.md)" >&2
fi
exit $STATUS
