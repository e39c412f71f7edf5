#!/usr/bin/env bash
# Side-by-side benchmark of wasmq, BullMQ (Node, and its official Rust crate) and Celery on one
# throwaway Redis: bulk enqueue, processing throughput and paced end-to-end latency of no-op jobs.
# See bench/peers/README.md.
#
#   bench/peers/run.sh                       # from the repository root
#   N=2000 DURATION=2 bench/peers/run.sh     # a quick, small run
#
# Environment (defaults):
#   N=20000                 jobs per enqueue and throughput run
#   RATE=500                jobs/s of the paced latency load
#   DURATION=10             seconds of the paced latency load
#   WASMQ_CONCURRENCY=2     concurrency of each wasmq worker process in the throughput runs
#   ROUNDS=3                runs per enqueue/throughput measurement for the peers (median);
#                           wasmq's bench always takes the median of 3
#   BULLMQ_CONCURRENCY=50   BullMQ Worker concurrency (Node and Rust)
#   CELERY_CONCURRENCY=2    Celery prefork pool size
#   WASMQ_BIN               wasmq binary (default target/release/wasmq, built if absent)
#   CARGO                   cargo for the BullMQ Rust crate's benchmark (default: the one on PATH;
#                           without one that column shows "failed")
#   REDIS_SERVER            redis-server binary (default: the one on PATH)
#   REDIS_PORT              loopback port of the throwaway Redis (default: a free one; never 6379)
#
# Prints one table on stdout (progress on stderr) and writes bench/peers/results.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEPS="$HERE/.deps"

N="${N:-20000}"
RATE="${RATE:-500}"
DURATION="${DURATION:-10}"
WASMQ_CONCURRENCY="${WASMQ_CONCURRENCY:-2}"
ROUNDS="${ROUNDS:-3}"
BULLMQ_CONCURRENCY="${BULLMQ_CONCURRENCY:-50}"
CELERY_CONCURRENCY="${CELERY_CONCURRENCY:-2}"
WASMQ_BIN="${WASMQ_BIN:-}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_PORT="${REDIS_PORT:-}"
CARGO="${CARGO:-cargo}"

die() {
    echo "run.sh: $*" >&2
    exit 1
}
say() { echo "==> $*" >&2; }

for v in N RATE DURATION WASMQ_CONCURRENCY ROUNDS BULLMQ_CONCURRENCY CELERY_CONCURRENCY; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done

# ---------------------------------------------------------------- prerequisites
command -v node >/dev/null || die "node is missing: install Node.js 18 or later (BullMQ 5 needs it)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
    die "node $(node --version) is too old: BullMQ 5 needs Node.js 18 or later"
command -v npm >/dev/null || die "npm is missing: install it with Node.js"
command -v python3 >/dev/null || die "python3 is missing: install Python 3.8 or later (Celery 5 needs it)"
python3 -c 'import venv, ensurepip' 2>/dev/null ||
    die "python3 cannot create virtual environments: install python3-venv"
command -v "$REDIS_SERVER" >/dev/null || die "redis-server is missing: install Redis 6.2 or later (e.g. apt-get install redis-server)"
command -v redis-cli >/dev/null || die "redis-cli is missing: install it with Redis (e.g. apt-get install redis-tools)"

if [[ -z "$WASMQ_BIN" ]]; then
    WASMQ_BIN="$ROOT/target/release/wasmq"
    if [[ ! -x "$WASMQ_BIN" ]]; then
        command -v cargo >/dev/null || die "$WASMQ_BIN is missing and cargo is not there to build it (or set WASMQ_BIN)"
        say "building wasmq: cargo build --release -p wasmq-cli --bin wasmq"
        (cd "$ROOT" && cargo build --release -p wasmq-cli --bin wasmq) >&2 ||
            die "cargo build --release -p wasmq-cli --bin wasmq failed"
    fi
fi
[[ -x "$WASMQ_BIN" ]] || die "WASMQ_BIN=$WASMQ_BIN is not an executable file"
"$WASMQ_BIN" bench --help >/dev/null 2>&1 ||
    die "$WASMQ_BIN has no 'bench' command (an old build?): rebuild it with cargo build --release -p wasmq-cli --bin wasmq"

# ---------------------------------------------------------------- peers, installed once
# BullMQ: exactly the versions of package-lock.json, into .deps/node (npm ci).
node_dir="$DEPS/node"
if [[ -f "$node_dir/node_modules/bullmq/package.json" ]] && cmp -s "$HERE/package-lock.json" "$node_dir/package-lock.json"; then
    :
else
    say "installing BullMQ into $node_dir (npm ci)"
    mkdir -p "$node_dir"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci failed in $node_dir"
fi

# Celery: exactly the versions of requirements.txt, into the virtual environment .deps/venv.
venv="$DEPS/venv"
if [[ -x "$venv/bin/python" ]] && cmp -s "$HERE/requirements.txt" "$venv/.bench-requirements.txt"; then
    :
else
    say "installing Celery into $venv (pip)"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" || die "python3 -m venv $venv failed"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt" >&2 ||
        die "pip install -r requirements.txt failed"
    cp "$HERE/requirements.txt" "$venv/.bench-requirements.txt"
fi
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ beside celery_bench.py

# BullMQ's Rust crate: the Cargo project bullmq-rs (outside wasmq's workspace), exactly as its
# Cargo.lock pins it, built into .deps. Cargo skips the build when nothing changed. Without cargo,
# or when the build fails, that column shows "failed" and the other systems still run.
bullmq_rs_target="$DEPS/bullmq-rs-target"
bullmq_rs_bin="$bullmq_rs_target/release/bullmq-rs-bench"
BULLMQ_RS_PROBLEM=""
if ! command -v "$CARGO" >/dev/null; then
    BULLMQ_RS_PROBLEM="cargo is missing (install Rust, or set CARGO)"
else
    say "building the BullMQ Rust benchmark into $bullmq_rs_target (cargo build --release --locked)"
    # From the repository root, so that rustup takes the toolchain of rust-toolchain.toml.
    (cd "$ROOT" && "$CARGO" build --release --locked --manifest-path "$HERE/bullmq-rs/Cargo.toml" \
        --target-dir "$bullmq_rs_target") >&2 || BULLMQ_RS_PROBLEM="cargo build of bench/peers/bullmq-rs failed"
fi

# ---------------------------------------------------------------- one throwaway Redis
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wasmq-peers.XXXXXX")"
REDIS_PID=""
STEP_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$STEP_PID" ]]; then
        kill -TERM "$STEP_PID" 2>/dev/null || true
        wait "$STEP_PID" 2>/dev/null || true
    fi
    if [[ -n "$REDIS_PID" ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z "$REDIS_PORT" ]]; then
    REDIS_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
[[ "$REDIS_PORT" != 6379 ]] || die "port 6379 is reserved for a shared Redis: pick another REDIS_PORT"
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly no \
    --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
URL="redis://127.0.0.1:$REDIS_PORT"
for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server did not start: $(tail -5 "$WORK/redis.log" 2>/dev/null)"
    sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG || die "redis-server does not answer on port $REDIS_PORT"
say "redis-server $("$REDIS_SERVER" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on $URL (no persistence)"

FAILED=()
# step NAME OUT CMD...: runs CMD with stdout to OUT (stderr shows progress); a failure is noted, not fatal.
step() {
    local name=$1 out=$2 rc=0
    shift 2
    say "$name"
    "$@" >"$out" &
    STEP_PID=$!
    wait "$STEP_PID" || rc=$?
    STEP_PID=""
    if [[ $rc -ne 0 ]]; then
        echo "run.sh: $name failed (exit $rc)" >&2
        FAILED+=("$name")
    fi
}
flush() { redis-cli -p "$REDIS_PORT" flushall >/dev/null; }

step "wasmq ($WASMQ_BIN)" "$WORK/wasmq.out" \
    "$WASMQ_BIN" bench --redis-url "$URL" --scenario enqueue --scenario throughput --scenario latency \
    --tasks "$N" --rate "$RATE" --duration "${DURATION}s" --concurrency "$WASMQ_CONCURRENCY" --json "$WORK/wasmq.json"
flush
step "BullMQ (Node)" "$WORK/bullmq.json" \
    node "$HERE/bullmq_bench.mjs" --redis-url "$URL" --tasks "$N" --rate "$RATE" --duration "$DURATION" \
    --concurrency "$BULLMQ_CONCURRENCY" --rounds "$ROUNDS"
flush
if [[ -z "$BULLMQ_RS_PROBLEM" ]]; then
    step "BullMQ (Rust crate)" "$WORK/bullmq-rs.json" \
        "$bullmq_rs_bin" --redis-url "$URL" --tasks "$N" --rate "$RATE" --duration "$DURATION" \
        --concurrency "$BULLMQ_CONCURRENCY" --rounds "$ROUNDS"
    flush
else
    echo "run.sh: BullMQ (Rust crate) failed: $BULLMQ_RS_PROBLEM" >&2
    FAILED+=("BullMQ (Rust crate)")
fi
step "Celery" "$WORK/celery.json" \
    "$venv/bin/python" "$HERE/celery_bench.py" --redis-url "$URL" --tasks "$N" --rate "$RATE" --duration "$DURATION" \
    --concurrency "$CELERY_CONCURRENCY" --rounds "$ROUNDS"
flush

echo >&2
python3 "$HERE/report.py" --wasmq "$WORK/wasmq.json" --bullmq "$WORK/bullmq.json" \
    --bullmq-rs "$WORK/bullmq-rs.json" --celery "$WORK/celery.json" \
    --out "$HERE/results.json" --tasks "$N" --rate "$RATE" --duration "$DURATION" \
    --wasmq-concurrency "$WASMQ_CONCURRENCY" --rounds "$ROUNDS"
echo "results written to ${HERE#"$ROOT"/}/results.json" >&2
if [[ ${#FAILED[@]} -gt 0 ]]; then
    die "failed: ${FAILED[*]} (see the messages above)"
fi
