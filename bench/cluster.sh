#!/usr/bin/env bash
# Throughput on a three-master Redis Cluster, with the tasks on one shard and spread over three.
# Starts the cluster itself (loopback, free ports, a temp folder) and stops it afterwards.
#
#   bench/cluster.sh            # from the repository root
#   N=20000 bench/cluster.sh    # tasks per run (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
WASMQ_BIN=${WASMQ_BIN:-target/release/wasmq}
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is not installed" >&2; exit 1; }
[ -x "$WASMQ_BIN" ] || cargo build --release -p wasmq

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# A free loopback port at most 55535: a cluster node also listens on port + 10000 (its bus).
free_port() {
  python3 -c '
import socket
for _ in range(100):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p <= 55535 and p != 6379:
        print(p); break'
}
ports=()
for i in 1 2 3; do
  port=$(free_port)
  mkdir -p "$dir/$i"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$i" --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file nodes.conf --logfile "$dir/$i/log" &
  pids+=($!)
  ports+=("$port")
done
for p in "${ports[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
  --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 200); do
  redis-cli -p "${ports[0]}" cluster info | grep -q cluster_state:ok && break
  sleep 0.05
done
url="redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
echo "cluster: $url"
# CPU seconds (user + sys) each master has used so far.
cpu() {
  for p in "${ports[@]}"; do
    redis-cli -p "$p" info cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.2f ", s}'
  done
}
for q in 1 3; do
  echo "== tasks on $q shard(s)"
  before=($(cpu))
  "$WASMQ_BIN" bench --redis-url "$url" --scenario throughput --tasks "$N" --queues "$q" 2>/dev/null | grep throughput
  after=($(cpu))
  # Redis CPU per node over the six runs (3 with one worker process, 3 with two).
  line="   Redis CPU seconds per node:"
  for i in 0 1 2; do line+=" $(awk -v a="${after[$i]}" -v b="${before[$i]}" 'BEGIN {printf "%.2f", a - b}')"; done
  echo "$line"
done
