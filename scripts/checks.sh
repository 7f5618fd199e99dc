# Sourced by the script tests (e2e.sh, lan_check.sh, netns_check.sh): a
# work folder removed at exit with every background job stopped, client
# state kept in it, `start_peer` (needs $BIN), and `check NAME
# CONDITION...` counting what passed.
# Set CHECKS (the name the lines start with) before sourcing.
work=$(mktemp -d)
cleanup_extra() { :; }
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  cleanup_extra
  rm -rf "$work"
}
trap cleanup EXIT
# Client-only runs keep their history, identity and known peers here, not
# in the user's ~/.local/state (where an old port's id would linger).
export XDG_STATE_HOME="$work/state"
passed=0; failed=0
check() { # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "$CHECKS: FAILED: $name" >&2; fi
}
# A headless peer of $BIN serving DIR on loopback, its stderr in LOG;
# sets $addr (what it announces) and $pid.
start_peer() { # start_peer DIR LOG EXTRA...
  local dir=$1 log=$2; shift 2
  mkdir -p "$dir"
  "$BIN" --listen 127.0.0.1:0 --dir "$dir" --headless "$@" > /dev/null 2> "$log" &
  pid=$!
  for _ in $(seq 200); do
    addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)
    [ -n "$addr" ] && return
    sleep 0.05
  done
  echo "peer did not start: $(cat "$log")" >&2; exit 1
}

# Print the tally; fail when something did.
report() {
  echo "$CHECKS: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}
