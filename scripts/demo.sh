#!/usr/bin/env bash
# Demo: builds dropbox-shell, starts a second peer on sample files on this
# machine (headless, serving them and accepting uploads; it does not sync
# on its own: type `sync` in the shell for a round), and opens the shell of a
# first peer pointed at it. The second peer runs in its own process group,
# so a Ctrl-C in the shell (to cancel a download) does not reach it. Leave
# the shell with `exit` or Ctrl-D; the second peer is stopped then.
# Folders: $DEMO_DIR (default /tmp/dropbox-shell-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/dropbox-shell
D=${DEMO_DIR:-/tmp/dropbox-shell-demo}
mkdir -p "$D/mine" "$D/theirs/docs/notes" "$D/theirs/photos" "$D/theirs/empty folder"
cd "$D/theirs"
[ -f readme.txt ] || echo "Hello from the other peer. Try: download TCP readme.txt" > readme.txt
[ -f "docs/notes/todo list.md" ] || printf '# todo\n- sync the folders\n- verify with md5\n' > "docs/notes/todo list.md"
[ -f docs/report.json ] || echo '{"status": "ok"}' > docs/report.json
[ -f photos/big.bin ] || head -c $((64 << 20)) /dev/urandom > photos/big.bin
chmod 600 docs/report.json
log=$D/theirs.log
# `set -m` gives the background job its own process group, away from the
# terminal's Ctrl-C; its pid is then also $!.
set -m
"$BIN" --listen 127.0.0.1:0 --dir "$D/theirs" --headless --allow-upload < /dev/null > /dev/null 2> "$log" &
peer_pid=$!
set +m
trap 'kill $peer_pid 2>/dev/null; wait $peer_pid 2>/dev/null || true' EXIT
addr=
for _ in $(seq 100); do
  addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "$addr" ] || { echo "the second peer did not start: $(cat "$log")" >&2; exit 1; }
cat <<TXT
The other peer shares $D/theirs on $addr.
This shell's peer shares $D/mine. Try:
  index longlist            index regex \.md$            hash checkall
  download TCP photos/big.bin                download UDP readme.txt
  upload <a file in $D/mine>                 history       peers      sync
TXT
"$BIN" --listen 127.0.0.1:0 --dir "$D/mine" --peer "$addr"
