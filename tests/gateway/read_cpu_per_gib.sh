#!/usr/bin/env bash
# read_cpu_per_gib.sh — ferry-gateway CPU seconds per GiB read (not a test;
# measures the read path, e.g. zero-copy sendfile against pread+send).
#
#   tests/gateway/read_cpu_per_gib.sh [GATEWAY_BINARY] [REQUEST_SIZE...]
#   (default binary $FERRY_BUILD_DIR/bin/ferry-gateway, sizes 65536 262144 1048576 4194304)
#
# Starts the gateway on free loopback ports (4 MiB chunks, data under a fresh
# mktemp dir), fills a 1 GiB volume with random data, then for each request
# size runs `nbdcopy --request-size=N nbd://.../v null:` once to warm up and
# three times measured. Prints utime+stime of the gateway (/proc/PID/stat)
# per GiB, and the wall time of each copy. Cleans up after itself.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
GW=${1:-${FERRY_BUILD_DIR:-$ROOT/build}/bin/ferry-gateway}
[ $# -gt 0 ] && shift
SIZES=${*:-65536 262144 1048576 4194304}
for tool in nbdcopy curl bc python3; do
  command -v $tool >/dev/null || { echo "read_cpu_per_gib: $tool is missing" >&2; exit 1; }
done
W=$(mktemp -d "${TMPDIR:-/tmp}/ferry-read-cpu.XXXXXX")
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
NBD=$(free_port); ADM=$(free_port)
"$GW" --data-dir "$W/data" --nbd-listen "127.0.0.1:$NBD" --admin-listen "127.0.0.1:$ADM" --log-level warn \
  >"$W/gw.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$ADM/healthz" >/dev/null && break; sleep 0.1; done
curl -sf -X POST "http://127.0.0.1:$ADM/v1/volumes" -d '{"name":"v","size":1073741824}' >/dev/null
head -c 1G /dev/urandom >"$W/src.raw"
nbdcopy "$W/src.raw" "nbd://127.0.0.1:$NBD/v"
rm -f "$W/src.raw"
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$PID/stat"; }
for rs in $SIZES; do
  nbdcopy --request-size="$rs" "nbd://127.0.0.1:$NBD/v" null:
  for rep in 1 2 3; do
    c0=$(cpu); t0=$(date +%s.%N)
    nbdcopy --request-size="$rs" "nbd://127.0.0.1:$NBD/v" null:
    t1=$(date +%s.%N); c1=$(cpu)
    printf 'request-size=%s rep=%s gateway_cpu_s_per_GiB=%s wall_s=%.2f\n' "$rs" "$rep" \
      "$(echo "scale=2; ($c1-$c0)/$tick" | bc)" "$(echo "$t1-$t0" | bc)"
  done
done
