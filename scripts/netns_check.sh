#!/usr/bin/env bash
# LAN discovery across two network namespaces joined by a veth pair: two
# syncing peers of one group, each in its own namespace on its own address
# (10.213.x.1 and .2, listening beyond loopback, so discovery is on by
# default), find each other with no --peer and sync a file. Needs root
# and `ip netns`; where that is not allowed it says so and skips. Prints
# "netns: N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
  echo "netns: skipped (needs root and iproute2's ip)"
  exit 0
fi
ns1=dbsh-a-$$ ns2=dbsh-b-$$
if ! ip netns add "$ns1" 2>/dev/null; then
  echo "netns: skipped (ip netns add is not permitted here)"
  exit 0
fi
CHECKS=netns
source scripts/checks.sh
cleanup_extra() {
  ip netns del "$ns1" 2>/dev/null || true
  ip netns del "$ns2" 2>/dev/null || true
}
cargo build --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/dropbox-shell
ip netns add "$ns2"
net=10.213.$(( $$ % 250 ))
ip link add "v1-$$" type veth peer name "v2-$$"
ip link set "v1-$$" netns "$ns1"
ip link set "v2-$$" netns "$ns2"
ip -n "$ns1" addr add "$net.1/24" dev "v1-$$"
ip -n "$ns2" addr add "$net.2/24" dev "v2-$$"
for ns in "$ns1" "$ns2"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns1" link set "v1-$$" up
ip -n "$ns2" link set "v2-$$" up
"$BIN" secret new "$work/group.key" > /dev/null
mkdir -p "$work/a" "$work/b"
echo "from the other namespace" > "$work/a/across.txt"
ip netns exec "$ns1" "$BIN" --listen "$net.1:0" --dir "$work/a" --headless --sync --interval 1 \
  --secret-file "$work/group.key" > /dev/null 2> "$work/a.log" &
ip netns exec "$ns2" "$BIN" --listen "$net.2:0" --dir "$work/b" --headless --sync --interval 1 \
  --secret-file "$work/group.key" > /dev/null 2> "$work/b.log" &
for _ in $(seq 600); do
  [ -s "$work/b/across.txt" ] && break
  sleep 0.1
done
check "the file crossed between namespaces" cmp -s "$work/a/across.txt" "$work/b/across.txt"
status=$(ip netns exec "$ns2" "$BIN" --json -c "sync status" --dir "$work/b" 2>/dev/null || true)
check "B's partner is A, at A's address, found on the LAN" grep -q "\"peer\":\"$net.1:" <<< "$status"
if ! report; then
  echo "--- a.log"; cat "$work/a.log"; echo "--- b.log"; cat "$work/b.log"; echo "--- status: $status"
  exit 1
fi
