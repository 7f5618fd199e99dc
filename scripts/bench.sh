#!/usr/bin/env bash
# Benchmarks: dropbox-shell against rsync (daemon and over ssh), scp, nc,
# md5sum and tftp on the same files in the same run; prints medians and
# ratios, and what encryption costs per GiB.
#
#   bash scripts/bench.sh            # everything, RUNS=3 runs of each, on tmpfs
#   bash scripts/bench.sh transfer   # downloads, hashing, listing, UDP
#   bash scripts/bench.sh sync       # sync latency and initial sync, also at 100k files
#   bash scripts/bench.sh deposit    # a 1 GiB deposit with 3 copies; retrieve
#   SCALE_1M=1 bash scripts/bench.sh sync   # ... and at 1M files (slow)
#   RUNS=5 BENCH_DIR=/tmp/b bash scripts/bench.sh
#
# Data lives on tmpfs (/dev/shm) so that the disk's write-back does not
# decide the result (on this VM even nc writes a GiB at 200-300 MB/s to disk).
# "cold" means our MD5 cache is empty (the server is restarted without it);
# the page cache is warm for every tool alike.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
WHAT=${1:-all}
case $WHAT in all|transfer|sync|deposit) ;; *) echo "usage: bench.sh [all|transfer|sync|deposit]" >&2; exit 2 ;; esac
W=${BENCH_DIR:-/dev/shm/dropbox-shell-bench}

need=()
for c in rsync:rsync nc:netcat-openbsd tftp:tftp-hpa atftpd:atftpd atftp:atftp python3:python3 /usr/bin/time:time; do
  command -v "${c%%:*}" >/dev/null 2>&1 || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bins --examples
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/dropbox-shell
RELAY=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/lossy_relay

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$W"
RES=$W/results.tsv
: > "$RES"
rm -f "$W/scale-extra.txt" "$W/seal-cost.txt"

# ---------------------------------------------------------------- data
echo "preparing data in $W" >&2
mkdir -p "$W/big" "$W/many" "$W/list" "$W/mid" "$W/dst"
[ -s "$W/big/big.bin" ] || head -c $((1 << 30)) /dev/urandom > "$W/big/big.bin"
[ -s "$W/mid/mid.bin" ] || head -c $((100 << 20)) "$W/big/big.bin" > "$W/mid/mid.bin"
if [ "$(ls "$W/many" | wc -l)" -lt 2000 ]; then
  for i in $(seq -w 1 2000); do
    dd if="$W/big/big.bin" of="$W/many/f$i.bin" bs=512K count=1 skip=$((10#$i - 1)) status=none
  done
fi
if [ "$(find "$W/list" -type f | wc -l)" -lt 100000 ]; then
  python3 - "$W/list" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    p = os.path.join(root, f"dir{d:03}")
    os.makedirs(p, exist_ok=True)
    for f in range(1000):
        with open(os.path.join(p, f"file{f:04}.txt"), "w") as fh:
            fh.write("x")
PY
fi
chmod -R a+rX "$W"
# ... but a peer's identity stays private (a readable one is refused).
find "$W" -path '*/.dropbox-shell/identity' -exec chmod 600 {} +

# ---------------------------------------------------------------- helpers
now_ns() { date +%s%N; }
TICK_NS=$(( 1000000000 / $(getconf CLK_TCK) ))
# CPU time the whole machine has spent busy (user, nice, system, irq,
# softirq), in ns: every process of every tool in a run counts.
busy_ns() { echo $(( $(awk '/^cpu / { printf "%d", $2 + $3 + $4 + $7 + $8 }' /proc/stat) * TICK_NS )); }
# measure NAME BYTES PREP CMD...: RUNS timed runs of CMD, PREP before each
# (REPS=1 measure ... for one run, inside a loop that takes turns).
measure() {
  local name=$1 bytes=$2 prep=$3; shift 3
  for _ in $(seq "${REPS:-$RUNS}"); do
    $prep
    local t0 t1 c0 c1
    c0=$(busy_ns)
    t0=$(now_ns)
    if ! "$@" > /dev/null 2> "$W/last.err"; then
      echo "FAILED: $name: $(tail -3 "$W/last.err")" >&2
      return 0
    fi
    t1=$(now_ns)
    c1=$(busy_ns)
    printf '%s\t%s\t%s\t%s\n' "$name" "$bytes" "$(( t1 - t0 ))" "$(( c1 - c0 ))" >> "$RES"
  done
}
nothing() { :; }
clean_dst() { rm -rf "$W/dst"; mkdir -p "$W/dst"; }

# start_peer NAME DIR [--cold]: a headless peer serving DIR; sets ${NAME}_addr.
start_peer() {
  local name=$1 dir=$2 cold=${3:-}
  local pidvar=${name}_pid
  if [ -n "${!pidvar:-}" ]; then kill "${!pidvar}" 2>/dev/null || true; wait "${!pidvar}" 2>/dev/null || true; fi
  [ "$cold" = --cold ] && rm -f "$dir/.dropbox-shell/md5-cache.json"
  "$BIN" --listen 127.0.0.1:0 --dir "$dir" --headless > /dev/null 2> "$W/$name.log" &
  await_peer "$name" $!
}
# await_peer NAME PID: record the pid and wait for the address the peer announces.
await_peer() {
  local name=$1 pid=$2
  pids+=("$pid")
  printf -v "${name}_pid" '%s' "$pid"
  for _ in $(seq 200); do
    local a
    a=$(grep -o '127\.0\.0\.1:[0-9]*' "$W/$name.log" | head -1 || true)
    if [ -n "$a" ]; then printf -v "${name}_addr" '%s' "$a"; return; fi
    sleep 0.02
  done
  echo "peer $name did not start" >&2; exit 1
}
ours() { # ours PEER_NAME CMD... (the address is looked up when it runs)
  local v=${1}_addr; shift
  local args=()
  for c in "$@"; do
    case $c in --*) args+=("$c") ;; *) args+=(-c "$c") ;; esac
  done
  "$BIN" --listen 127.0.0.1:0 --dir "$W/dst" --peer "${!v}" "${args[@]}"
}

# The 1 GiB file served cold (no MD5 cache) or with its MD5 cached.
cold_big() { clean_dst; start_peer big "$W/big" --cold; }
cached_big() { clean_dst; start_peer big "$W/big"; ours big "hash verify big.bin" > /dev/null 2>&1; }

# ---------------------------------------------------------------- rsync daemon
cat > "$W/rsyncd.conf" <<CONF
use chroot = no
[big]
  path = $W/big
  read only = yes
  exclude = .dropbox-shell/
[list]
  path = $W/list
  read only = yes
  exclude = .dropbox-shell/
[scale100k]
  path = $W/scale-100k
  read only = yes
  exclude = .dropbox-shell/
[many]
  path = $W/many
  read only = yes
  exclude = .dropbox-shell/
CONF
RSYNC_PORT=$((20000 + RANDOM % 20000))
rsync --daemon --no-detach --config="$W/rsyncd.conf" --port="$RSYNC_PORT" --address=127.0.0.1 --log-file=/dev/null &
pids+=($!)
sleep 0.5

mem_tcp=0 mem_udp=0
GIB=$((1 << 30))
if [ "$WHAT" = all ] || [ "$WHAT" = transfer ]; then
# ---------------------------------------------------------------- sshd
# An sshd of our own on a free port on loopback, with throwaway keys, for
# rsync -e ssh and scp; stopped by its pid at exit.
start_sshd() {
  if [ ! -x /usr/sbin/sshd ]; then
    echo "installing openssh-server" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
  fi
  local d=$W/ssh
  rm -rf "$d"; mkdir -p "$d" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$d/user_key"
  cp "$d/user_key.pub" "$d/authorized_keys"
  chmod 600 "$d/authorized_keys"
  SSH_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$d/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
CONF
  /usr/sbin/sshd -D -e -f "$d/sshd_config" 2> "$W/sshd.log" &
  pids+=($!)
  SSH_OPTS=(-i "$d/user_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
  SSH_CMD="ssh -p $SSH_PORT ${SSH_OPTS[*]}"
  for _ in $(seq 50); do
    $SSH_CMD 127.0.0.1 true 2>/dev/null && return 0
    sleep 0.1
  done
  echo "sshd did not start: $(tail -3 "$W/sshd.log")" >&2
  return 1
}
rsync_ssh() { rsync -e "$SSH_CMD" --checksum-choice=md5 "127.0.0.1:$W/big/big.bin" "$W/dst/"; }
scp_get() { scp -q -P "$SSH_PORT" "${SSH_OPTS[@]}" "127.0.0.1:$W/big/big.bin" "$W/dst/"; }

# ---------------------------------------------------------------- 1 GiB download
echo "1 GiB download: ours (TCP, UDP, encrypted) vs rsync -md5 (daemon, ssh) vs scp vs nc" >&2
ssh_ok=0
start_sshd && ssh_ok=1
nc_get() {
  local port=$((40000 + RANDOM % 20000))
  nc -N -l 127.0.0.1 "$port" < "$W/big/big.bin" &
  local p=$!
  sleep 0.2
  nc 127.0.0.1 "$port" > "$W/dst/nc.bin"
  wait "$p" 2>/dev/null || true
}
# The tools take turns, run by run, so that a slow spell of this shared
# machine does not fall on one tool only.
for _ in $(seq "$RUNS"); do
  REPS=1 measure "download TCP 1 GiB, cold cache" $GIB cold_big ours big "download TCP big.bin"
  REPS=1 measure "download TCP 1 GiB, MD5 cached" $GIB cached_big ours big "download TCP big.bin"
  REPS=1 measure "download UDP 1 GiB, cold cache" $GIB cold_big ours big "download UDP big.bin"
  REPS=1 measure "download UDP 1 GiB, MD5 cached" $GIB cached_big ours big "download UDP big.bin"
  REPS=1 measure "rsync --checksum-choice=md5 1 GiB" $GIB clean_dst \
    rsync --checksum-choice=md5 "rsync://127.0.0.1:$RSYNC_PORT/big/big.bin" "$W/dst/"
  REPS=1 measure "nc 1 GiB (no checksum)" $GIB clean_dst nc_get
  REPS=1 measure "md5sum 1 GiB" $GIB nothing md5sum "$W/big/big.bin"
  if [ "$ssh_ok" = 1 ]; then
    REPS=1 measure "rsync -e ssh --checksum-choice=md5 1 GiB" $GIB clean_dst rsync_ssh
    REPS=1 measure "scp 1 GiB" $GIB clean_dst scp_get
  fi
done
# What sealing and opening cost per GiB, on one core.
"${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/seal_cost" > "$W/seal-cost.txt"

# Peak memory of the receiving process.
clean_dst
/usr/bin/time -v "$BIN" --listen 127.0.0.1:0 --dir "$W/dst" --peer "$big_addr" -c "download TCP big.bin" > /dev/null 2> "$W/mem-tcp.txt"
clean_dst
/usr/bin/time -v "$BIN" --listen 127.0.0.1:0 --dir "$W/dst" --peer "$big_addr" -c "download UDP big.bin" > /dev/null 2> "$W/mem-udp.txt"
mem_tcp=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$W/mem-tcp.txt")
mem_udp=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$W/mem-udp.txt")
clean_dst

# ---------------------------------------------------------------- checkall
echo "hash checkall: 2,000 files x 512 KiB vs md5sum" >&2
cold_many() { start_peer many "$W/many" --cold; }
measure "hash checkall 2000 x 512 KiB, cold" $GIB cold_many ours many "hash checkall"
measure "hash checkall 2000 x 512 KiB, warm" $GIB nothing ours many "hash checkall"
md5sum_many() { md5sum "$W"/many/*.bin; }
measure "md5sum 2000 x 512 KiB (sequential)" $GIB nothing md5sum_many

# ---------------------------------------------------------------- listing
echo "index longlist: 100,000 files vs rsync --list-only" >&2
start_peer list "$W/list"
measure "index longlist 100k files --json" 0 nothing ours list "index longlist" --json
list_table() { ours list "index longlist"; }
measure "index longlist 100k files, table" 0 nothing list_table
measure "rsync --list-only -r 100k files" 0 nothing \
  rsync --list-only -r "rsync://127.0.0.1:$RSYNC_PORT/list/"

# ---------------------------------------------------------------- UDP vs tftp
echo "100 MiB over UDP: ours vs atftpd with tftp-hpa and atftp" >&2
MIB100=$((100 << 20))
start_peer mid "$W/mid"
ours mid "hash verify mid.bin" > /dev/null 2>&1
measure "download UDP 100 MiB" $MIB100 clean_dst ours mid "download UDP mid.bin"
measure "download TCP 100 MiB" $MIB100 clean_dst ours mid "download TCP mid.bin"
TFTP_PORT=$((20000 + RANDOM % 20000))
atftpd --daemon --no-fork --logfile /dev/null --user root --group root --port "$TFTP_PORT" --bind-address 127.0.0.1 "$W/mid" &
pids+=($!)
sleep 0.3
tftp_hpa() { tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get mid.bin "$W/dst/mid.tftp"; cmp -s "$W/dst/mid.tftp" "$W/mid/mid.bin"; }
atftp_64k() { atftp --option "blksize 65464" -g -r mid.bin -l "$W/dst/mid.atftp" 127.0.0.1 "$TFTP_PORT"; cmp -s "$W/dst/mid.atftp" "$W/mid/mid.bin"; }
measure "tftp-hpa 100 MiB (512-byte blocks)" $MIB100 clean_dst tftp_hpa
measure "atftp 100 MiB (blksize 65464)" $MIB100 clean_dst atftp_64k

echo "100 MiB over UDP through a lossy relay" >&2
mid_port=${mid_addr##*:}
for loss in 0 0.01 0.05 0.20; do
  rport=$((20000 + RANDOM % 20000))
  "$RELAY" "127.0.0.1:$rport" "127.0.0.1:$mid_port" --loss "$loss" --seed 7 2> /dev/null &
  rpid=$!
  pids+=("$rpid")
  sleep 0.2
  relay_addr=127.0.0.1:$rport
  measure "download UDP 100 MiB via relay, ${loss} loss" $MIB100 clean_dst ours relay "download UDP mid.bin"
  kill "$rpid" 2>/dev/null || true
done

fi

if [ "$WHAT" = all ] || [ "$WHAT" = deposit ]; then
# ---------------------------------------------------------------- deposits
# Three stores in three zones; the owner deposits big.bin with 3 copies
# (sent in parallel) against three downloads of it one after another, and
# retrieves it against one download. Every run starts from nothing held
# (forget), so the bytes really travel.
echo "deposits: 1 GiB with 3 copies vs 3 downloads in a row; retrieve vs download" >&2
rm -rf "$W/st1" "$W/st2" "$W/st3" "$W/own"
mkdir -p "$W/st1" "$W/st2" "$W/st3" "$W/own"
ln "$W/big/big.bin" "$W/own/big.bin"
store_peer() { # store_peer NAME ZONE
  "$BIN" --listen 127.0.0.1:0 --dir "$W/$1" --headless --store --zone "$2" > /dev/null 2> "$W/$1.log" &
  await_peer "$1" $!
}
store_peer st1 za; store_peer st2 zb; store_peer st3 zc
owner_cmd() { "$BIN" --listen 127.0.0.1:0 --dir "$W/own" --peer "$st1_addr" --peer "$st2_addr" --peer "$st3_addr" -c "$1"; }
unheld() { owner_cmd "forget big.bin --yes" > /dev/null 2>&1 || true; }
three_downloads() {
  for _ in 1 2 3; do clean_dst; ours big "download TCP big.bin" || return 1; done
}
fresh_retrieve() { rm -f "$W/own/back.bin"; }
owner_cmd "hash verify big.bin" > /dev/null 2>&1 || true
for _ in $(seq "$RUNS"); do
  REPS=1 measure "deposit 1 GiB, 3 copies (MD5 cached)" $((3 * GIB)) unheld owner_cmd "deposit big.bin --copies 3"
  REPS=1 measure "3 x download TCP 1 GiB in a row (MD5 cached)" $((3 * GIB)) cached_big three_downloads
  REPS=1 measure "retrieve 1 GiB" $GIB fresh_retrieve owner_cmd "retrieve big.bin back.bin"
  REPS=1 measure "download TCP 1 GiB, cold cache" $GIB cold_big ours big "download TCP big.bin"
done
rm -f "$W/own/back.bin"
fi

if [ "$WHAT" = all ] || [ "$WHAT" = sync ]; then
# ---------------------------------------------------------------- sync
echo "sync: latency of a new 1 KiB file; initial sync of 2,000 files / 1 GiB" >&2
mkdir -p "$W/sa" "$W/sb"
rm -rf "$W/sa/"* "$W/sb/"* "$W/sa/.dropbox-shell" "$W/sb/.dropbox-shell"
sync_peer() { # sync_peer NAME DIR [PEER]: a headless --sync peer (timer off: events only)
  local name=$1 dir=$2 peer=${3:-}
  local extra=(--sync --interval 3600)
  [ -n "$peer" ] && extra+=(--peer "$peer")
  "$BIN" --listen 127.0.0.1:0 --dir "$dir" --headless "${extra[@]}" > /dev/null 2> "$W/$name.log" &
  await_peer "$name" $!
}
sync_peer sa "$W/sa"
sync_peer sb "$W/sb" "$sa_addr"
sleep 1
head -c 1024 /dev/urandom > "$W/one-kib"
for i in $(seq $((RUNS * 3))); do
  t0=$(now_ns)
  cp "$W/one-kib" "$W/sa/lat$i.txt"
  for _ in $(seq 2000); do [ -s "$W/sb/lat$i.txt" ] && break; sleep 0.002; done
  t1=$(now_ns)
  [ -s "$W/sb/lat$i.txt" ] && printf '%s\t0\t%s\t0\n' "sync latency, new 1 KiB file" "$(( t1 - t0 ))" >> "$RES"
  sleep 0.2
done
kill "$sa_pid" "$sb_pid" 2>/dev/null || true
wait "$sa_pid" "$sb_pid" 2>/dev/null || true

# Initial sync of many/ into an empty peer; the source has hashed its files
# once. The end is read from the receiving peer's own history log (the time
# of its last pull), so that the benchmark's polling, once a second, neither
# steals CPU from the peers nor rounds the result.
converged() { [ "$(find "$W/sdst" -maxdepth 1 -name 'f*.bin' | wc -l)" = 2000 ]; }
clean_sdst() { rm -rf "$W/sdst"; mkdir -p "$W/sdst"; }
start_peer many "$W/many"
ours many "hash checkall" > /dev/null 2>&1
initial_sync() {
  clean_sdst
  local t0 t1 c0 c1
  c0=$(busy_ns)
  t0=$(now_ns)
  sync_peer sdst "$W/sdst" "$many_addr"
  for _ in $(seq 300); do converged && break; sleep 1; done
  c1=$(busy_ns)
  if converged; then
    t1=$(grep '"command":"sync pull ' "$W/sdst/.dropbox-shell/history.log" | tail -1 |
      python3 -c 'import sys, json, datetime; t = json.loads(sys.stdin.read())["time"]; print(int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1e9))')
    printf '%s\t%s\t%s\t%s\n' "initial sync 2000 files / 1 GiB (ours)" "$GIB" "$(( t1 - t0 ))" "$(( c1 - c0 ))" >> "$RES"
  else
    echo "FAILED: initial sync did not converge" >&2
  fi
  kill "$sdst_pid"; wait "$sdst_pid" 2>/dev/null || true
}
for _ in $(seq "$RUNS"); do
  initial_sync
  REPS=1 measure "rsync -a --checksum-choice=md5 2000 files" $GIB clean_sdst \
    rsync -a --checksum-choice=md5 "rsync://127.0.0.1:$RSYNC_PORT/many/" "$W/sdst/"
  REPS=1 measure "rsync -a 2000 files" $GIB clean_sdst rsync -a "rsync://127.0.0.1:$RSYNC_PORT/many/" "$W/sdst/"
done

# ---------------------------------------------------------------- sync at scale
# A folder of N files of 100 B (in folders of 1,000): the initial sync into
# an empty peer (and, at 100k, rsync -a from the daemon), then with the pair
# in sync: the latency of one new 1 KiB file (median of 7), the bytes the
# two peers move on loopback for it, their CPU time while left alone for
# 60 s, and their peak memory.
echo "sync at scale: 1k and 100k files${SCALE_1M:+ and 1M}" >&2
EXTRA=$W/scale-extra.txt
: > "$EXTRA"
make_tree() { # make_tree DIR N
  local dir=$1 n=$2
  [ -f "$dir/.complete-$n" ] && return
  rm -rf "$dir"; mkdir -p "$dir"
  python3 - "$dir" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 1000:04}.txt"), "w") as f:
        f.write(os.urandom(50).hex())
PY
  touch "$dir/.complete-$n"
}
count_files() { find "$1" -path "$1/.dropbox-shell" -prune -o -type f -name 'f*.txt' -print | wc -l; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_mib() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
lo_bytes() { cat /sys/class/net/lo/statistics/tx_bytes; }
# settle PID...: wait (at most 10 minutes) until the peers are quiet: less
# than 5 ticks of CPU between them over 2 s, twice in a row. After an
# initial sync the puller still sends its index back and rescans once; the
# figures of a pair in sync are taken after that.
settle() {
  local quiet=0 before after
  for _ in $(seq 300); do
    before=0; for p in "$@"; do before=$(( before + $(cpu_ticks "$p") )); done
    sleep 2
    after=0; for p in "$@"; do after=$(( after + $(cpu_ticks "$p") )); done
    if [ $(( after - before )) -lt 5 ]; then quiet=$(( quiet + 1 )); else quiet=0; fi
    [ "$quiet" -ge 2 ] && return
  done
  echo "the pair did not settle in 10 minutes" >&2
}
scale_run() { # scale_run N LABEL
  local n=$1 label=$2 src=$W/scale-$2 dst=$W/scale-$2-dst
  make_tree "$src" "$n"
  rm -rf "$src/.dropbox-shell"
  sync_peer sca "$src"
  "$BIN" --dir "$W/dst" --peer "$sca_addr" -c "hash checkall" > /dev/null 2>&1
  # Its MD5s are cached on disk now; a fresh process, so that its peak
  # memory is the sync's, not the hashing's.
  kill "$sca_pid" 2>/dev/null || true; wait "$sca_pid" 2>/dev/null || true
  sync_peer sca "$src"
  local runs=1
  [ "$label" = 100k ] && runs=$RUNS
  for r in $(seq "$runs"); do
    if [ "${scb_pid:-}" ]; then
      # A fresh pair: the source forgets the partner of the run before.
      kill "$scb_pid" "$sca_pid" 2>/dev/null; wait "$scb_pid" "$sca_pid" 2>/dev/null || true
      rm -f "$src/.dropbox-shell/sync.db"*
      sync_peer sca "$src"
    fi
    rm -rf "$dst"; mkdir -p "$dst"
    # A running source, as the rsync daemon is: it has indexed its folder
    # (at its start, once, not per partner) before the clock starts.
    settle "$sca_pid"
    local t0 t1 c0 c1
    c0=$(busy_ns); t0=$(now_ns)
    sync_peer scb "$dst" "$sca_addr"
    for _ in $(seq 1200); do [ "$(count_files "$dst")" -ge "$n" ] && break; sleep 1; done
    c1=$(busy_ns)
    if [ "$(count_files "$dst")" -ge "$n" ]; then
      t1=$(grep '"command":"sync pull ' "$dst/.dropbox-shell/history.log" | tail -1 |
        python3 -c 'import sys, json, datetime; t = json.loads(sys.stdin.read())["time"]; print(int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1e9))')
      printf '%s\t0\t%s\t%s\n' "initial sync $label x 100 B (ours)" "$(( t1 - t0 ))" "$(( c1 - c0 ))" >> "$RES"
    else
      echo "FAILED: initial sync of $label files did not converge" >&2
    fi
    if [ "$label" = 100k ]; then
      clean_scale() { rm -rf "$W/scale-rsync"; mkdir -p "$W/scale-rsync"; }
      REPS=1 measure "rsync -a 100k x 100 B (daemon)" 0 clean_scale \
        rsync -a "rsync://127.0.0.1:$RSYNC_PORT/scale100k/" "$W/scale-rsync/"
    fi
  done
  settle "$sca_pid" "$scb_pid"
  for i in $(seq 7); do
    t0=$(now_ns)
    head -c 1024 /dev/urandom > "$src/lat$i.txt"
    for _ in $(seq 5000); do [ -s "$dst/lat$i.txt" ] && break; sleep 0.002; done
    t1=$(now_ns)
    [ -s "$dst/lat$i.txt" ] && printf '%s\t0\t%s\t0\n' "sync latency, new 1 KiB file, $label files" "$(( t1 - t0 ))" >> "$RES"
    sleep 0.5
  done
  sleep 2
  local b0 b1
  b0=$(lo_bytes)
  head -c 1024 /dev/urandom > "$src/bytes.txt"
  for _ in $(seq 5000); do [ -s "$dst/bytes.txt" ] && break; sleep 0.002; done
  sleep 2
  b1=$(lo_bytes)
  echo "bytes on loopback for one new 1 KiB file, $label files: $(( (b1 - b0) / 1024 )) KiB (goal: a few KiB)" >> "$EXTRA"
  if [ "$label" != 1k ]; then
    local a0 z0 a1 z1
    a0=$(cpu_ticks "$sca_pid"); z0=$(cpu_ticks "$scb_pid")
    sleep 60
    a1=$(cpu_ticks "$sca_pid"); z1=$(cpu_ticks "$scb_pid")
    echo "CPU of a syncing pair left alone for 60 s, $label files: $(python3 -c "print(f'{($a1 - $a0 + $z1 - $z0) / $(getconf CLK_TCK):.2f}')") s (goal: well under 1 s)" >> "$EXTRA"
  fi
  echo "peak memory of the syncing peers, $label files: $(hwm_mib "$sca_pid") and $(hwm_mib "$scb_pid") MiB (goal: < 64 MiB at 100k, < 300 MiB at 1M)" >> "$EXTRA"
  kill "$sca_pid" "$scb_pid" 2>/dev/null || true
  wait "$sca_pid" "$scb_pid" 2>/dev/null || true
  unset scb_pid
}
scale_run 1000 1k
scale_run 100000 100k
[ -n "${SCALE_1M:-}" ] && scale_run 1000000 1M
fi

# ---------------------------------------------------------------- report
python3 - "$RES" "$mem_tcp" "$mem_udp" <<'PY'
import os, statistics, sys
from collections import OrderedDict
res, mem_tcp, mem_udp = sys.argv[1], sys.argv[2], sys.argv[3]
runs = OrderedDict()
cpu = OrderedDict()
size = {}
for line in open(res):
    name, nbytes, ns, cpu_ns = line.rstrip("\n").split("\t")
    runs.setdefault(name, []).append(int(ns) / 1e9)
    cpu.setdefault(name, []).append(int(cpu_ns) / 1e9)
    size[name] = int(nbytes)
med = {k: statistics.median(v) for k, v in runs.items()}
med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
print(f"{'benchmark':48} {'median s':>9} {'MiB/s':>8} {'CPU s':>6} {'runs':>5}")
for k, v in med.items():
    rate = f"{size[k] / v / 2**20:8.0f}" if size[k] else f"{'':>8}"
    c = f"{med_cpu[k]:6.2f}" if med_cpu[k] else f"{'':>6}"
    print(f"{k:48} {v:9.3f} {rate} {c} {len(runs[k]):5}")
print("(CPU s: busy CPU time of the whole machine during the run, every process of the tool)")
print()
def ratio(label, theirs, ours, goal=None):
    if theirs in med and ours in med:
        r = med[theirs] / med[ours]
        g = f"  (goal {goal})" if goal else ""
        print(f"{label:60} {r:6.2f}x{g}")
ratio("download TCP (encrypted) vs rsync-md5 daemon (plaintext), cold", "rsync --checksum-choice=md5 1 GiB", "download TCP 1 GiB, cold cache", ">= 0.9x")
ratio("download TCP vs rsync-md5, MD5 cached", "rsync --checksum-choice=md5 1 GiB", "download TCP 1 GiB, MD5 cached")
ratio("download TCP vs nc (nc verifies nothing)", "nc 1 GiB (no checksum)", "download TCP 1 GiB, MD5 cached")
ratio("download TCP vs rsync -e ssh --checksum-choice=md5, cold", "rsync -e ssh --checksum-choice=md5 1 GiB", "download TCP 1 GiB, cold cache", "> 1x")
ratio("download TCP vs scp, cold", "scp 1 GiB", "download TCP 1 GiB, cold cache", "> 1x")
ratio("download TCP vs scp, MD5 cached", "scp 1 GiB", "download TCP 1 GiB, MD5 cached")
ratio("download UDP vs rsync -e ssh --checksum-choice=md5, cold", "rsync -e ssh --checksum-choice=md5 1 GiB", "download UDP 1 GiB, cold cache", "> 1x")
ratio("download UDP vs scp, cold", "scp 1 GiB", "download UDP 1 GiB, cold cache", "> 1x")
ratio("download UDP vs our TCP, cold (throughput ratio)", "download TCP 1 GiB, cold cache", "download UDP 1 GiB, cold cache", ">= 0.7x")
ratio("download UDP vs our TCP, MD5 cached", "download TCP 1 GiB, MD5 cached", "download UDP 1 GiB, MD5 cached")
ratio("hash checkall cold vs sequential md5sum", "md5sum 2000 x 512 KiB (sequential)", "hash checkall 2000 x 512 KiB, cold", ">= 1.5x")
ratio("hash checkall warm vs sequential md5sum", "md5sum 2000 x 512 KiB (sequential)", "hash checkall 2000 x 512 KiB, warm", ">= 20x")
ratio("index longlist --json vs rsync --list-only", "rsync --list-only -r 100k files", "index longlist 100k files --json", ">= 1x")
ratio("index longlist table vs rsync --list-only", "rsync --list-only -r 100k files", "index longlist 100k files, table")
ratio("download UDP 100 MiB vs atftp blksize 65464", "atftp 100 MiB (blksize 65464)", "download UDP 100 MiB", "> 1x")
ratio("download UDP 100 MiB vs tftp-hpa", "tftp-hpa 100 MiB (512-byte blocks)", "download UDP 100 MiB")
ratio("UDP at 5% loss vs lossless relay (throughput ratio)", "download UDP 100 MiB via relay, 0 loss", "download UDP 100 MiB via relay, 0.05 loss", ">= 0.5x")
ratio("UDP at 5% loss vs lossless direct (throughput ratio)", "download UDP 100 MiB", "download UDP 100 MiB via relay, 0.05 loss", ">= 0.5x")
ratio("deposit 3 copies vs 3 downloads in a row", "3 x download TCP 1 GiB in a row (MD5 cached)", "deposit 1 GiB, 3 copies (MD5 cached)", "> 1x")
ratio("retrieve vs download TCP, cold", "download TCP 1 GiB, cold cache", "retrieve 1 GiB", ">= 0.9x")
ratio("initial sync vs rsync -a --checksum-choice=md5", "rsync -a --checksum-choice=md5 2000 files", "initial sync 2000 files / 1 GiB (ours)", "> 1x")
ratio("initial sync vs plain rsync -a", "rsync -a 2000 files", "initial sync 2000 files / 1 GiB (ours)")
ratio("initial sync 100k x 100 B vs rsync -a (daemon)", "rsync -a 100k x 100 B (daemon)", "initial sync 100k x 100 B (ours)", "> 1x")
for label in ("1k", "100k", "1M"):
    k = f"sync latency, new 1 KiB file, {label} files"
    if k in med:
        print(f"{k + ' (median)':60} {med[k]*1000:6.0f} ms  (goal < 50 ms, flat from 1k to 1M)")
if "sync latency, new 1 KiB file" in med:
    print(f"{'sync latency, new 1 KiB file (median)':60} {med['sync latency, new 1 KiB file']*1000:6.0f} ms  (goal < 500 ms; Syncthing: 10 s default, 1 s at its shortest)")
print()
# What bounds a verified copy when both peers share this machine's cores:
# moving the bytes (what nc spends) plus an MD5 pass on each end (what
# md5sum spends), spread perfectly over every core.
nc, md5 = "nc 1 GiB (no checksum)", "md5sum 1 GiB"
rs = "rsync --checksum-choice=md5 1 GiB"
if nc in med_cpu and md5 in med_cpu and rs in med:
    cores = os.cpu_count() or 1
    floor = (med_cpu[nc] + 2 * med_cpu[md5]) / cores
    print(f"a 1 GiB copy hashed on both ends, both peers on these {cores} cores, needs about")
    print(f"  (nc CPU {med_cpu[nc]:.2f} s + 2 x md5sum CPU {med_cpu[md5]:.2f} s) / {cores} cores = {floor:.2f} s;")
    print(f"  rsync-md5 / that = {med[rs] / floor:.2f}x is about the most any tool can gain over rsync-md5 here")
    print()
if mem_tcp != "0":
  print(f"peak memory of the receiving peer, 1 GiB download: TCP {int(mem_tcp)/1024:.1f} MiB, UDP {int(mem_udp)/1024:.1f} MiB (goal < 64 MiB)")
seal = os.path.join(os.path.dirname(res), "seal-cost.txt")
if os.path.exists(seal) and mem_tcp != "0":
    print("encryption's CPU cost per GiB on one core (examples/seal_cost.rs):")
    for line in open(seal):
        what, secs, unit = line.rstrip("\n").split("\t")
        print(f"  {what:24} {float(secs):6.3f} {unit}")
extra = os.path.join(os.path.dirname(res), "scale-extra.txt")
if os.path.exists(extra):
    print(open(extra).read(), end="")
PY
