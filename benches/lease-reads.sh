#!/usr/bin/env bash
# ReadIndex reads against lease reads, on this machine, in one run, alternating: 3 `rainkv serve`
# processes on loopback (fsync on) with the default [raft] section, then with lease_reads = true,
# each driven by `rainkv bench --config` (get_64 and mixed_64 over 10 000 keys).
# Run from the project root after `cargo build --release`:
#   benches/lease-reads.sh [ROUNDS=3]
# Prints each round's lines, then per workload the median ops/s of both and their ratio.
# Ports: 27200-27202, 27300-27302.
set -u
rounds=${1:-3}
rk=${RAINKV_BIN:-target/release/rainkv}
[ -x "$rk" ] || { echo "no $rk: run cargo build --release first" >&2; exit 2; }
work=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done; pids=(); }
trap 'stop; rm -rf "$work"' EXIT

# Writes the cluster file for `mode` (readindex or lease).
cluster_file() {
  local lease=false
  [ "$1" = lease ] && lease=true
  printf '[cluster]\nname = "lease-reads"\ntoken = "lease-reads"\n[raft]\nlease_reads = %s\n' "$lease"
  for i in 0 1 2; do
    printf '[[node]]\nid = %d\npeer = "127.0.0.1:%d"\nclient = "127.0.0.1:%d"\n' "$i" $((27200 + i)) $((27300 + i))
  done
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
for r in $(seq 1 "$rounds"); do
  for mode in readindex lease; do
    cluster_file "$mode" >"$work/$mode.toml"
    rm -rf "$work"/data-*
    for i in 0 1 2; do
      RUST_LOG=warn "$rk" serve --config "$work/$mode.toml" --id $i --data "$work/data-$i" >"$work/serve-$i.log" 2>&1 &
      pids+=($!)
    done
    sleep 3
    "$rk" bench --config "$work/$mode.toml" --workloads get,mixed 2>&1 | grep '^workload' | sed "s/^/$mode /" | tee -a "$work/lines"
    stop
  done
done
awk '
  { m=$1; w=""; v="";
    for (i=2;i<=NF;i++) { split($i,kv,"="); if (kv[1]=="workload") w=kv[2]; if (kv[1]=="ops_per_s") v=kv[2] }
    if (w!="" && v!="") { n[m,w]++; x[m,w,n[m,w]]=v+0; ws[w]=1 } }
  function med(m,w,   k,i,j,t,a) { k=n[m,w]; for(i=1;i<=k;i++) a[i]=x[m,w,i];
    for(i=1;i<=k;i++) for(j=i+1;j<=k;j++) if(a[j]<a[i]){t=a[i];a[i]=a[j];a[j]=t}
    return k ? a[int((k+1)/2)] : 0 }
  END { printf "%-10s %16s %16s %8s\n", "workload", "readindex ops/s", "lease ops/s", "ratio";
    for (w in ws) { a=med("readindex",w); b=med("lease",w);
      printf "%-10s %16.0f %16.0f %8.2f\n", w, a, b, (a>0 ? b/a : 0) } }' "$work/lines"
