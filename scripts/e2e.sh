#!/usr/bin/env bash
# End-to-end: two real peers on loopback, commands piped into the shell's
# standard input, outputs and files checked. Prints "e2e: N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/dropbox-shell
CHECKS=e2e
source scripts/checks.sh

mkdir -p "$work/a/docs/deep" "$work/a/empty dir" "$work/b"
echo "hello from a" > "$work/a/docs/readme.txt"
echo "ünïcödé" > "$work/a/docs/deep/ñame with space.md"
head -c 3000000 /dev/urandom > "$work/a/photo.jpg"
chmod 600 "$work/a/photo.jpg"
echo "mine" > "$work/b/mine.txt"

start_peer "$work/a" "$work/a.log" --allow-upload
A=$addr A_PID=$pid

printf '%s\n' \
  'index longlist' \
  'index regex \.md$' \
  'index shortlist 2000-01-01 2999-12-31' \
  'hash checkall' \
  'hash verify docs/readme.txt' \
  'download TCP docs/readme.txt' \
  'download UDP photo.jpg' \
  'download tcp "docs/deep/ñame with space.md"' \
  'upload mine.txt' \
  'download TCP ../etc/passwd' \
  'history 4' \
  | "$BIN" --listen 127.0.0.1:0 --dir "$work/b" --peer "$A" --json > "$work/out.jsonl" 2> "$work/b.err" && status=0 || status=$?

check "exit status is 1 (one command was refused)" [ "$status" = 1 ]
check "one JSON line per command" [ "$(wc -l < "$work/out.jsonl")" = 11 ]
line() { sed -n "${1}p" "$work/out.jsonl"; }
entry() { line "$1" | grep -o "{[^{}]*\"name\":\"$2\"[^{}]*}"; } # entry LINE NAME: its JSON object
check "longlist is recursive with dirs" grep -q '"type":"directory"' <(entry 1 docs/deep)
check "folders say kind dir" grep -q '"kind":"dir"' <(entry 1 docs/deep)
check "longlist has 6 entries" [ "$(line 1 | grep -o '"name"' | wc -l)" = 6 ]
check "regex matches the .md file only" [ "$(line 2 | grep -o '"name":"[^"]*"')" = '"name":"docs/deep/ñame with space.md"' ]
check "shortlist with a wide range lists everything" [ "$(line 3 | grep -o '"name"' | wc -l)" = 6 ]
want=$(md5sum "$work/a/photo.jpg" | cut -d' ' -f1)
check "checkall has the photo's md5" grep -q "$want" <(line 4)
check "verify has the readme's md5" grep -q "$(md5sum "$work/a/docs/readme.txt" | cut -d' ' -f1)" <(line 5)
check "TCP download is byte-identical" cmp -s "$work/a/docs/readme.txt" "$work/b/docs/readme.txt"
check "UDP download is byte-identical" cmp -s "$work/a/photo.jpg" "$work/b/photo.jpg"
check "UDP reports attempts" grep -q '"attempts":1' <(line 7)
check "mode travels" [ "$(stat -c %a "$work/b/photo.jpg")" = 600 ]
check "mtime travels" [ "$(stat -c %Y "$work/a/photo.jpg")" = "$(stat -c %Y "$work/b/photo.jpg")" ]
check "quoted non-ASCII name downloads" cmp -s "$work/a/docs/deep/ñame with space.md" "$work/b/docs/deep/ñame with space.md"
check "upload landed" cmp -s "$work/b/mine.txt" "$work/a/mine.txt"
check "hostile name refused with a JSON error" grep -q '"error":".*leaves the shared folder' <(line 10)
check "history shows the upload" grep -q '"command":"upload mine.txt"' <(line 11)
check "no temporary files left" [ -z "$(find "$work/a" "$work/b" -name '*.dbsh-part')" ]
check "served requests logged on a" [ "$(grep -c '"direction":"served"' "$work/a/.dropbox-shell/history.log")" -ge 8 ]

# Deposits: three stores in three zones, an owner's commands on stdin.
start_peer "$work/s1" "$work/s1.log" --store --zone za; S1=$addr
start_peer "$work/s2" "$work/s2.log" --store --zone zb; S2=$addr
start_peer "$work/s3" "$work/s3.log" --store --zone zc; S3=$addr
mkdir -p "$work/d"
cp "$work/a/photo.jpg" "$work/d/photo.jpg"
owner() { "$BIN" --listen 127.0.0.1:0 --dir "$work/d" --peer "$S1" --peer "$S2" --peer "$S3" --json; }
printf '%s\n' \
  'deposit photo.jpg --copies 3' \
  'replicas' \
  'retrieve photo.jpg copy.jpg' \
  'copies photo.jpg 2' \
  'repair' \
  'forget photo.jpg' \
  'forget photo.jpg --yes' \
  'replicas' \
  | owner > "$work/dep.jsonl" 2> "$work/d.err" && status=0 || status=$?
dline() { sed -n "${1}p" "$work/dep.jsonl"; }
blobs() { find "$work"/s[123]/.dropbox-shell/store -name 'blob-*' | wc -l; }
check "deposit: 3 copies made" grep -q '"copies_made":3' <(dline 1)
check "deposit: in three zones" [ "$(dline 1 | grep -o '"zone":"z[abc]"' | sort -u | wc -l)" = 3 ]
check "replicas: 3 of 3 ok" grep -q '"copies_found":3.*"status":"ok"' <(dline 2)
check "retrieve is byte-identical" cmp -s "$work/d/photo.jpg" "$work/d/copy.jpg"
check "retrieve names its store" grep -q '"from":{"address":"127.0.0.1:' <(dline 3)
check "copies 2: one removed" grep -q '"copies_found":2' <(dline 4)
check "repair: all ok" grep -q '"copies_found":2' <(dline 5)
check "forget without --yes asks for it" grep -q -- '--yes' <(dline 6)
check "forget --yes removes the copies" grep -q '"removed":\[{' <(dline 7)
check "replicas empty after forget" grep -q '"deposits":\[\]' <(dline 8)
check "no blob left on any store" [ "$(blobs)" = 0 ]
check "deposit run exits 1 (forget without --yes failed)" [ "$status" = 1 ]
check "stores list nothing of it" [ "$("$BIN" --dir "$work/d" --peer "$S1" --json -c 'index longlist' | grep -o '"name"' | wc -l)" = 0 ]

# The second peer down: commands say so, the process goes on, exit status 1.
kill "$A_PID"; wait "$A_PID" 2>/dev/null || true
out=$("$BIN" --listen 127.0.0.1:0 --dir "$work/b" --peer "$A" -c 'index longlist' -c 'help index' 2>&1) && status=0 || status=$?
check "a dead peer is a clear error" grep -q "unreachable" <<< "$out"
check "later commands still run" grep -q "usage: index" <<< "$out"
check "and the exit status is 1" [ "$status" = 1 ]

report
