#!/usr/bin/env python3
"""Celery peer of `wasmq bench` (enqueue, throughput, latency); see README.md beside this file.

    python celery_bench.py --redis-url redis://127.0.0.1:PORT [--scenario enqueue|throughput|latency]...
        [--tasks N] [--rate R] [--duration SECONDS] [--concurrency 2] [--rounds 3]

Prints one JSON object on stdout: {"peer": "celery", "versions": {...}, "config": {...}, "metrics": [...]}.
Progress goes to stderr. This module is also the Celery app of the worker processes, which are
started as `python -m celery -A celery_bench worker --pool=prefork --concurrency=C -Q QUEUE`.

Celery runs with its Redis broker and its Redis result backend, both in the same Redis database,
and library defaults everywhere else (JSON serializer, prefetch multiplier 4, acks on receipt,
results kept for a day). The only setting changed is broker_connection_retry_on_startup=True,
which silences a deprecation warning and changes nothing once connected.

Every timestamp is wall-clock time since the epoch (time.time() here, and datetime.now(UTC) in
the result backend's `date_done`), taken on this machine, so producer and worker clocks agree.
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
URL_ENV = "CELERY_BENCH_REDIS_URL"

# The worker processes get the URL from the environment; the producer sets it in main().
# Without it Celery would fall back to its defaults (a broker on localhost), never wanted here.
if __name__ != "__main__" and not os.environ.get(URL_ENV):
    raise RuntimeError(f"celery_bench: {URL_ENV} is not set")
app = Celery("celery_bench", broker=os.environ.get(URL_ENV), backend=os.environ.get(URL_ENV))
app.conf.broker_connection_retry_on_startup = True


@app.task(name="noop")
def noop():
    # The no-op task. Its return value (the result stored in the backend) is the time its body
    # started running in the pool process: that is the "first start" of the throughput scenario,
    # measured without task_track_started (which would add one more backend write per task).
    return time.time()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def pct(sorted_values, p):
    # Same rule as wasmq's bench: the element at round((len - 1) * p).
    if not sorted_values:
        return None
    return sorted_values[int(round((len(sorted_values) - 1) * p))]


def median(xs):
    return sorted(xs)[len(xs) // 2]


METRICS = []


def metric(key, scenario, name, value, unit, note="", **extra):
    METRICS.append({"key": key, "scenario": scenario, "name": name, "value": value, "unit": unit, "note": note, **extra})
    shown = "-" if value is None else (f"{value:.0f}" if value >= 100 else f"{value:.3f}")
    log(f"    {name}: {shown} {unit}")


def redis_client():
    return app.backend.client  # redis-py client of the result backend (same Redis, same DB)


def meta_key(task_id):
    return app.backend.get_key_for_task(task_id).decode()


def drop(queue, ids):
    """Deletes a run's queue and its results (wasmq's bench deletes its queues too)."""
    r = redis_client()
    r.delete(queue)
    for i in range(0, len(ids), 1000):
        r.delete(*[meta_key(t) for t in ids[i:i + 1000]])


def wait_results(ids, timeout, worker=None, on_poll=None):
    """Waits until every task in `ids` has a result in the backend (or raises)."""
    r = redis_client()
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while True:
        # Tasks finish roughly in order: check the oldest 1000 still pending, one EXISTS each,
        # every 50 ms (as wasmq's bench polls its queue's stats), so as not to load the machine.
        head = pending[:1000]
        pipe = r.pipeline(transaction=False)
        for t in head:
            pipe.exists(meta_key(t))
        found = {t for t, e in zip(head, pipe.execute()) if e}
        if found:
            pending = [t for t in pending if t not in found]
        if not pending:
            return
        if on_poll:
            on_poll()
        if worker is not None and worker.proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.proc.returncode}); {len(pending)} of {len(ids)} tasks unfinished\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - len(pending)} of {len(ids)} tasks finished after {timeout} s")
        time.sleep(0.05)


def results(ids):
    """(start time returned by the task, date_done) per task, both as epoch seconds."""
    r = redis_client()
    out = []
    for i in range(0, len(ids), 1000):
        chunk = ids[i:i + 1000]
        for t, raw in zip(chunk, r.mget([meta_key(t) for t in chunk])):
            if raw is None:
                raise RuntimeError(f"task {t} has no result")
            meta = json.loads(raw)
            if meta["status"] != "SUCCESS":
                raise RuntimeError(f"task {t} ended {meta['status']}: {meta.get('result')}")
            done = datetime.datetime.fromisoformat(meta["date_done"]).timestamp()
            out.append((meta["result"], done))
    return out


class WorkerProc:
    """`celery worker --pool=prefork` in a session of its own; all of it is killed at the end."""

    def __init__(self, queue, concurrency, redis_url, logdir):
        self.logpath = os.path.join(logdir, f"celery-worker-{queue}.log")
        env = dict(os.environ, PYTHONPATH=HERE, PYTHONDONTWRITEBYTECODE="1")
        env[URL_ENV] = redis_url
        cmd = [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "--pool=prefork",
               f"--concurrency={concurrency}", "-Q", queue, "-n", f"{queue}@%h", "--loglevel=WARNING"]
        with open(self.logpath, "wb") as logf:
            self.proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.peak_rss = 0

    def pids(self):
        """The worker's main process and every descendant (the prefork pool)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return out

    def sample_rss(self):
        # Sum of the peak RSS (VmHWM) of the main process and the pool processes: an upper bound
        # of the memory they use, since forked processes share pages that each one counts.
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        self.peak_rss = max(self.peak_rss, total)

    def tail(self, n=20):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # pool processes left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=15)


def enqueue(o, logdir):
    """Bulk enqueue: Celery has no bulk API, so N apply_async() calls in a loop, one after another.

    Each call LPUSHes one message onto the queue list and, because a Redis result backend is
    configured, SUBSCRIBEs the producer to the task's result channel (and UNSUBSCRIBEs when the
    AsyncResult is dropped, here right away: only the id is kept). Median of `rounds` runs.
    """
    warm = f"bench-warm-{os.getpid()}"
    drop(warm, [noop.apply_async(queue=warm).id])  # connect the producer before timing
    rates = []
    for rnd in range(o.rounds):
        q = f"bench-enqueue-{os.getpid()}-{rnd}"
        t = time.perf_counter()
        ids = [noop.apply_async(queue=q).id for _ in range(o.tasks)]
        secs = time.perf_counter() - t
        n = redis_client().llen(q)
        if n != o.tasks:
            raise RuntimeError(f"enqueued {n} of {o.tasks}")
        rates.append(o.tasks / secs)
        drop(q, ids)
    metric("enqueue", "enqueue", "enqueue (apply_async in a loop, no bulk API)", median(rates), "tasks/s",
           f"median of {o.rounds} runs of {o.tasks}")


def throughput(o, logdir):
    """N tasks queued first, then one prefork worker (concurrency C) drains them.

    Measured from the earliest time a task body started (the value each task returns) to the
    latest `date_done` in the result backend (stamped by the worker right before it writes the
    result: SET + PUBLISH). Median of `rounds` runs; worker start-up is not counted.
    """
    rates, peak = [], 0
    for rnd in range(o.rounds):
        q = f"bench-noop-{os.getpid()}-{rnd}"
        ids = [noop.apply_async(queue=q).id for _ in range(o.tasks)]
        w = WorkerProc(q, o.concurrency, o.redis_url, logdir)
        try:
            wait_results(ids, 600, worker=w, on_poll=w.sample_rss)
            w.sample_rss()
        finally:
            w.stop()
        peak = max(peak, w.peak_rss)
        rows = results(ids)
        first_start = min(s for s, _ in rows)
        last_done = max(d for _, d in rows)
        rates.append(o.tasks / (last_done - first_start))
        drop(q, ids)
    metric("throughput", "noop", f"throughput, 1 worker (prefork) x concurrency {o.concurrency}", median(rates),
           "tasks/s", f"median of {o.rounds} runs of {o.tasks}, first start to last date_done")
    metric("rss", "noop", f"worker peak RSS, main + {o.concurrency} pool processes", peak / 2**20, "MiB",
           "sum of VmHWM over the worker's processes (counts shared pages more than once)")


def latency(o, logdir):
    """Paced load into an idle prefork worker (concurrency C), warmed up with 4 tasks.

    The producer calls apply_async every 1/R s for D s (catching up without sleeping when it falls
    behind); latency = `date_done` in the result backend - submit time (time.time() right before
    apply_async), per task.
    """
    q = f"bench-latency-{os.getpid()}"
    w = WorkerProc(q, o.concurrency, o.redis_url, logdir)
    ids = []
    try:
        warm = [noop.apply_async(queue=q).id for _ in range(4)]
        ids.extend(warm)
        wait_results(warm, 60, worker=w)
        time.sleep(0.5)
        total = int(o.rate * o.duration)
        sent = []
        t0 = time.perf_counter()
        for i in range(total):
            wait = t0 + i / o.rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            submit = time.time()
            sent.append((noop.apply_async(queue=q).id, submit))
        elapsed = time.perf_counter() - t0
        ids.extend(t for t, _ in sent)
        wait_results([t for t, _ in sent], 120, worker=w)
    finally:
        w.stop()
    rows = results([t for t, _ in sent])
    lat = sorted((done - submit) * 1000 for (_, submit), (_, done) in zip(sent, rows))
    note = (f"{total} no-op tasks at {o.rate}/s (sent in {elapsed:.2f} s) into 1 idle prefork worker x "
            f"concurrency {o.concurrency}; submit -> date_done")
    metric("latency_p50", "latency", "end-to-end p50", pct(lat, 0.5), "ms", note, sent_s=elapsed)
    metric("latency_p99", "latency", "end-to-end p99", pct(lat, 0.99), "ms", note, sent_s=elapsed)
    metric("latency_max", "latency", "end-to-end max", pct(lat, 1.0), "ms", note, sent_s=elapsed)
    drop(q, ids)


def versions():
    import billiard
    import celery
    import kombu
    import redis
    return {"celery": celery.__version__, "kombu": kombu.__version__, "billiard": billiard.__version__,
            "redis-py": redis.__version__, "python": sys.version.split()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--scenario", action="append", choices=["enqueue", "throughput", "latency"])
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    o = ap.parse_args()
    for k in ("tasks", "rate", "duration", "concurrency", "rounds"):
        if getattr(o, k) <= 0:
            ap.error(f"--{k} must be positive")
    u = urllib.parse.urlsplit(o.redis_url)
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme != "redis" or not u.hostname or port is None:
        ap.error("--redis-url must be redis://HOST:PORT[/DB] with an explicit port")
    if o.rate == int(o.rate):
        o.rate = int(o.rate)
    app.conf.update(broker_url=o.redis_url, result_backend=o.redis_url)
    # On SIGTERM (run.sh stopping), unwind through the `finally` blocks that stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scenarios = {"enqueue": enqueue, "throughput": throughput, "latency": latency}
    failed = False
    with tempfile.TemporaryDirectory(prefix="celery-bench-") as logdir:
        for s in o.scenario or ["enqueue", "throughput", "latency"]:
            log(f"==> celery: {s}")
            try:
                scenarios[s](o, logdir)
            except Exception as e:  # noqa: BLE001 - reported in the JSON, the run goes on
                failed = True
                log(f"    failed: {e}")
                METRICS.append({"key": s, "scenario": s, "name": "failed", "value": None, "unit": "", "note": str(e)})
    out = {"peer": "celery", "versions": versions(),
           "config": {"tasks": o.tasks, "rate": o.rate, "duration_s": o.duration, "concurrency": o.concurrency,
                      "rounds": o.rounds},
           "metrics": METRICS}
    print(json.dumps(out, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
