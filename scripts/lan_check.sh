#!/usr/bin/env bash
# LAN discovery seen by a third-party mDNS implementation: python-zeroconf
# (installed from PyPI into a venv of its own) browses the loopback
# interface and must see our peers' _dropbox-shell._tcp services with
# their port and TXT record (id, version, zone, store, uploads, group tag;
# the tag of a peer with a group secret is not the secret). Prints
# "lan: N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/dropbox-shell
VENV=${ZEROCONF_VENV:-${CARGO_TARGET_DIR:-$PWD/target}/zeroconf-venv}
if ! "$VENV/bin/python" -c 'import zeroconf' 2>/dev/null; then
  echo "installing python-zeroconf into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet zeroconf
fi
CHECKS=lan
source scripts/checks.sh
"$BIN" secret new "$work/group.key" > /dev/null
start_peer "$work/a" "$work/a.log" --discover --allow-upload
A=$addr
A_ID=$(grep -o 'peer id [A-Z0-9-]*' "$work/a.log" | cut -d' ' -f3)
start_peer "$work/b" "$work/b.log" --discover --secret-file "$work/group.key"
B=$addr
B_ID=$(grep -o 'peer id [A-Z0-9-]*' "$work/b.log" | cut -d' ' -f3)
"$VENV/bin/python" scripts/zeroconf_browse.py 5 loopback > "$work/seen.jsonl"

has() { # has ID KEY VALUE: the service of peer ID shows KEY=VALUE
  python3 - "$work/seen.jsonl" "$@" <<'PY'
import json, sys
path, peer, key, value = sys.argv[1:]
for line in open(path):
    s = json.loads(line)
    if s["txt"].get("id") == peer:
        got = {"port": str(s["port"]), "name": s["name"], "address": ",".join(s["addresses"])}.get(key, s["txt"].get(key))
        sys.exit(0 if got == value else 1)
sys.exit(1)
PY
}
check "A is seen with its port" has "$A_ID" port "${A##*:}"
check "A's address" has "$A_ID" address 127.0.0.1
check "A's instance name is its short id" has "$A_ID" name "$(echo "$A_ID" | tr -d - | cut -c1-7)._dropbox-shell._tcp.local."
check "A's protocol version" has "$A_ID" v "$(sed -n 's/^pub const VERSION: u32 = \([0-9]*\);/\1/p' src/proto/mod.rs)"
check "A takes uploads" has "$A_ID" up 1
check "A has no group" has "$A_ID" group ""
check "B is seen" has "$B_ID" port "${B##*:}"
tag_set() { grep "\"id\": \"$B_ID\"" "$work/seen.jsonl" | grep -Eq '"group": "[0-9a-f]{32}"'; }
check "B's group tag is set" tag_set
check "B's group tag is not its secret" bash -c "! grep -q \"\$(cut -d' ' -f3 '$work/group.key' | cut -c1-16)\" '$work/seen.jsonl'"
report
