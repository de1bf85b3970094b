#!/usr/bin/env bash
# RainKV against etcd 3.4 on this machine, in one run: alternating rounds of a 3-member etcd
# cluster (fsync on, driven by benches/etcd/loadgen) and 3 `rainkv serve` processes (fsync on,
# driven by `rainkv bench --config`), the same four workloads on both: seq_put (one request in
# flight, 2000 ops), put, get (linearizable) and mixed (50/50 get/put), 64 in flight, 50 000
# ops each; 16 B keys over 10 000 keys, 128 B values. Prints each round's lines, then per
# workload the median ops/s of both and their ratio (RainKV / etcd).
#
#   cargo build --release && benches/vs-etcd.sh [ROUNDS=3]
#
# The first run installs etcd-server, etcd-client and protobuf-compiler with apt and builds
# the load generator (a few minutes). Ports: 23791-23803 (etcd), 27000-27102 (RainKV).
set -u
here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:-3}
rk=${RAINKV_BIN:-target/release/rainkv}
[ -x "$rk" ] || { echo "no $rk: run cargo build --release first" >&2; exit 2; }
loadgen=$("$here/etcd/setup.sh" | tail -1) || { echo "benches/etcd/setup.sh failed" >&2; exit 2; }
work=$(mktemp -d)
export ETCD_ANCHOR_DIR=$work/etcd

# The machine: CPU, cores, and what one small synchronous write costs on the disk under
# $work (both systems write their logs there): 2000 writes of 512 B with O_DSYNC.
fsync_probe() {
  local start end
  start=$(date +%s%N)
  dd if=/dev/zero of="$work/probe" bs=512 count=2000 oflag=dsync status=none
  end=$(date +%s%N)
  rm -f "$work/probe"
  awk -v ns=$((end - start)) 'BEGIN { printf "%.3f ms", ns / 2000 / 1e6 }'
}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
  "synchronous 512 B write $(fsync_probe) (mean of 2000); $(date -u +%Y-%m-%d)"

cat > "$work/cluster.toml" <<TOML
[cluster]
name = "vs-etcd"
token = "vs-etcd"
[[node]]
id = 0
peer = "127.0.0.1:27000"
client = "127.0.0.1:27100"
[[node]]
id = 1
peer = "127.0.0.1:27001"
client = "127.0.0.1:27101"
[[node]]
id = 2
peer = "127.0.0.1:27002"
client = "127.0.0.1:27102"
TOML
pids=()
rk_stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  pids=()
}
trap 'rk_stop; "$here/etcd/cluster.sh" stop >/dev/null 2>&1; rm -rf "$work"' EXIT
for r in $(seq 1 "$rounds"); do
  "$here/etcd/cluster.sh" start fsync >/dev/null || exit 1
  "$loadgen" --target leader --workloads seq_put,put,get,mixed --label "round=$r" 2>&1 \
    | grep '^workload' | sed 's/^/etcd /' | tee -a "$work/lines"
  "$here/etcd/cluster.sh" stop >/dev/null
  rm -rf "$work"/data-*
  for i in 0 1 2; do
    RUST_LOG=warn "$rk" serve --config "$work/cluster.toml" --id $i --data "$work/data-$i" \
      >"$work/serve-$i.log" 2>&1 &
    pids+=($!)
  done
  "$rk" bench --config "$work/cluster.toml" 2>&1 | grep '^workload' | sed 's/^/rainkv /' \
    | tee -a "$work/lines"
  rk_stop
done
# etcd names the workloads seq_put/put/get/mixed, rainkv seq_put/put_64/get_64/mixed_64.
awk '
  { sys = $1; w = ""; v = ""
    for (i = 2; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == "workload") w = kv[2]
      if (kv[1] == "ops_per_s") v = kv[2]
    }
    sub(/_64$/, "", w)
    if (w != "" && v != "") { n[sys, w]++; x[sys, w, n[sys, w]] = v + 0; seen[w] = 1 } }
  function median(s, w,   k, i, j, t, a) {
    k = n[s, w]
    for (i = 1; i <= k; i++) a[i] = x[s, w, i]
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return k ? a[int((k + 1) / 2)] : 0 }
  END {
    printf "%-8s %12s %12s %8s\n", "workload", "etcd ops/s", "rainkv ops/s", "ratio"
    split("seq_put put get mixed", order, " ")
    for (o = 1; o <= 4; o++) {
      w = order[o]
      if (!(w in seen)) continue
      e = median("etcd", w); k = median("rainkv", w)
      printf "%-8s %12.0f %12.0f %8.2f\n", w, e, k, (e > 0 ? k / e : 0) } }' "$work/lines"
