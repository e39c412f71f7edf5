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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=()
for i in 1 2 3; do
  port=$(free_port)
  [ "$port" != 6379 ] || port=$(free_port)
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
for q in 1 3; do
  echo "== tasks on $q shard(s)"
  "$WASMQ_BIN" bench --redis-url "$url" --scenario throughput --tasks "$N" --queues "$q" 2>/dev/null | grep throughput
done
