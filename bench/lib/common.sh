# bench/lib/common.sh — the shell pieces bench/iscsi and bench/relay-ceiling
# share (sourced, never run). Before sourcing set NAME (for messages), PY (a
# python3) and BENCH_DIR; bench_workdir then makes WORK, the pids array and
# the traps that kill every started process and remove WORK on any exit.

# SIZE with an optional K/M/G suffix -> bytes
bench_bytes() {
  $PY -c "import sys;s=sys.argv[1].upper();m={'K':1<<10,'M':1<<20,'G':1<<30};print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$1"
}

free_port() { $PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

wait_tcp() {  # host port seconds
  for _ in $(seq 1 $(( $3 * 20 ))); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$NAME: $1:$2 did not open" >&2; return 1
}

bench_cleanup() {
  # Best effort on the way out: a process may already be gone.
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${TGT_CTL:-}" ] && rm -f "/var/run/tgtd/socket.$TGT_CTL" "/var/run/tgtd/socket.$TGT_CTL.lock"
  rm -rf "$WORK"
}

bench_workdir() {
  mkdir -p "$BENCH_DIR"
  WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM   # exit runs the EXIT trap
}

# start_tgt FILE IQN: tgtd (its own control socket, a free portal port) with
# FILE as a rdwr LUN 1 of target IQN, open to any initiator; sets TGT_URL.
start_tgt() {
  local port
  port=$(free_port)
  TGT_CTL=$(( (RANDOM % 29000) + 1000 ))
  while [ -e "/var/run/tgtd/socket.$TGT_CTL" ]; do TGT_CTL=$(( (RANDOM % 29000) + 1000 )); done
  tgtd -f -C "$TGT_CTL" --iscsi "portal=127.0.0.1:$port" >"$WORK/tgtd.log" 2>&1 &
  pids+=($!)
  wait_tcp 127.0.0.1 "$port" 15
  tgtadm_ --mode target --op new --tid 1 --targetname "$2"
  tgtadm_ --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$1" --bstype rdwr
  tgtadm_ --mode target --op bind --tid 1 --initiator-address ALL
  TGT_URL="iscsi://127.0.0.1:$port/$2/1"
}
# tgtadm, retried while tgtd is still coming up (its control socket appears late).
tgtadm_() {
  for _ in $(seq 1 50); do tgtadm -C "$TGT_CTL" --lld iscsi "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  tgtadm -C "$TGT_CTL" --lld iscsi "$@"
}

# iscsi_perf SECONDS URL ARGS... -> "iops client_cpu_seconds" (iscsi-perf's
# own user+sys, from wait4)
iscsi_perf() {
  $PY - "$@" <<'PYEOF'
import os, re, subprocess, sys
secs, url, args = sys.argv[1], sys.argv[2], sys.argv[3:]
p = subprocess.Popen(["iscsi-perf", "-t", secs, *args, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
out = p.stdout.read().decode(errors="replace").replace("\r", "\n")
_, _, ru = os.wait4(p.pid, 0)
m = re.findall(r"iops average (\d+)", out)
print(m[-1] if m else 0, f"{ru.ru_utime + ru.ru_stime:.3f}")
PYEOF
}
