# Shared by the benchmark harnesses (sourced, not run): processes they start are killed on exit,
# and readiness is polled with a deadline.
# Add every background process to PIDS.
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_for() { # wait_for SECONDS COMMAND...: bounded poll for readiness
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -ge "$end" ] && { echo "not ready: $*" >&2; return 1; }
    sleep 0.2
  done
}
