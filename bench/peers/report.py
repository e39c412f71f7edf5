#!/usr/bin/env python3
"""Merges the JSON of `wasmq bench`, bullmq_bench.mjs, bullmq-rs and celery_bench.py into one table.

    python3 report.py --wasmq W.json --bullmq B.json --bullmq-rs R.json --celery C.json --out results.json
        [--tasks N --rate R --duration D --wasmq-concurrency C --rounds K]

Prints the table (a Markdown table, aligned for the terminal) on stdout and writes --out.
A missing or unreadable input, or a failed scenario, shows as "failed" in its column.
Standard library only.
"""

import argparse
import datetime
import json
import sys

# key (also the JSON file's option, with "-" for "_"), column name
PEERS = [("wasmq", "wasmq"), ("bullmq", "BullMQ-Node"), ("bullmq_rs", "BullMQ-Rust"), ("celery", "Celery")]
# wasmq is compared with each of these, one ratio column each
OTHERS = [(p, name) for p, name in PEERS if p != "wasmq"]

# key, label, unit, better, scenario whose failure empties the row
ROWS = [
    ("enqueue", "enqueue", "tasks/s", "higher", "enqueue"),
    ("throughput", "throughput, 1 worker process", "tasks/s", "higher", "throughput"),
    ("throughput2", "throughput, 2 worker processes", "tasks/s", "higher", "throughput"),
    ("rss", "worker peak RSS, throughput run", "MiB", "lower", "throughput"),
    ("latency_p50", "latency p50", "ms", "lower", "latency"),
    ("latency_p99", "latency p99", "ms", "lower", "latency"),
    ("latency_max", "latency max", "ms", "lower", "latency"),
]


def wasmq_key(m):
    """Maps a metric of `wasmq bench --json` to a row key (None: not compared)."""
    s, n = m.get("scenario", ""), m.get("name", "")
    if n == "failed":
        return None
    if s == "enqueue":
        return "enqueue"
    if s == "noop":
        if n.startswith("throughput, 1 worker"):
            return "throughput"
        if n.startswith("throughput, 2 worker"):
            return "throughput2"
        if n.startswith("worker peak RSS, 1 "):
            return "rss"
    if s == "latency":
        return {"end-to-end p50": "latency_p50", "end-to-end p99": "latency_p99", "end-to-end max": "latency_max"}.get(n)
    return None


def load(path):
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"{path}: {e}"


def cells(peer, doc):
    """{row key: value or "failed"} and {row key: note} for one peer's JSON."""
    values, notes = {}, {}
    if doc is None:
        return {k: "failed" for k, *_ in ROWS if peer == "wasmq" or k != "throughput2"}, notes
    failed = set()
    for m in doc.get("metrics", []):
        if m.get("name") == "failed":
            failed.add(m.get("scenario") if peer == "wasmq" else m.get("key"))
            continue
        key = wasmq_key(m) if peer == "wasmq" else m.get("key")
        if key:
            values[key] = m.get("value") if m.get("value") is not None else "failed"
            notes[key] = m.get("note", "")
    for key, _, _, _, scenario in ROWS:
        if key not in values and scenario in failed:
            values[key] = "failed"
    return values, notes


def fmt(v):
    # The same rule as wasmq's own table.
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if v >= 1000:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return a / b
    return None


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.0f}" if r >= 100 else f"{r:.3g}"  # 3 significant digits: 29.2, 1.43, 0.00416


def render(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    right = [False] + [True] * (len(header) - 2) + [False]  # numbers right-aligned

    def line(r):
        return "| " + " | ".join(str(c).rjust(w) if ra else str(c).ljust(w) for c, w, ra in zip(r, widths, right)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if ra else ("-" * (w + 2)) for w, ra in zip(widths, right)) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for p, _ in PEERS:
        ap.add_argument(f"--{p.replace('_', '-')}", dest=p, required=True, metavar="JSON")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", type=int)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--wasmq-concurrency", type=int)
    ap.add_argument("--rounds", type=int)
    a = ap.parse_args()

    docs, values, notes, problems = {}, {}, {}, []
    for p, _ in PEERS:
        docs[p], err = load(getattr(a, p))
        if err:
            problems.append(err)
        values[p], notes[p] = cells(p, docs[p])

    # A paced load above what a system can process measures its backlog, not an idle worker.
    saturated = {}
    for p, _ in PEERS:
        t = values[p].get("throughput")
        if a.rate and isinstance(t, (int, float)) and t < a.rate:
            saturated[p] = t

    out_rows, table = [], []
    for key, label, unit, better, _ in ROWS:
        v = {p: values[p].get(key) for p, _ in PEERS}
        if all(x is None for x in v.values()):
            continue
        r = {p: ratio(v["wasmq"], v[p]) for p, _ in OTHERS}
        shown = {p: fmt(v[p]) + (" *" if key.startswith("latency") and p in saturated and isinstance(v[p], (int, float)) else "")
                 for p, _ in PEERS}
        table.append([f"{label} ({unit})", *(shown[p] for p, _ in PEERS), *(fmt_ratio(r[p]) for p, _ in OTHERS), better])
        out_rows.append({"key": key, "scenario": label, "unit": unit, "better": better,
                         **{p: v[p] for p, _ in PEERS}, **{f"wasmq/{p}": r[p] for p, _ in OTHERS},
                         "notes": {p: notes[p].get(key, "") for p, _ in PEERS if key in notes[p]}})

    machine = (docs["wasmq"] or {}).get("machine") or {}
    bcfg = (docs["bullmq"] or {}).get("config", {})
    rcfg = (docs["bullmq_rs"] or {}).get("config", {})
    ccfg = (docs["celery"] or {}).get("config", {})
    bver = (docs["bullmq"] or {}).get("versions", {})
    rver = (docs["bullmq_rs"] or {}).get("versions", {})
    cver = (docs["celery"] or {}).get("versions", {})
    wc = a.wasmq_concurrency if a.wasmq_concurrency is not None else "?"
    setups = {
        "wasmq": f"enqueue: pipelined bulk enqueue; throughput: 1 (and 2) `wasmq worker` processes x concurrency {wc}; "
                 "latency: 2 idle worker processes x concurrency 1; medians of 3 runs",
        "bullmq": f"enqueue: Queue.addBulk, 1000 jobs per call; throughput: 1 Node process, Worker concurrency "
                  f"{bcfg.get('concurrency', '?')}; latency: the same, idle; medians of {bcfg.get('rounds', '?')} runs",
        "bullmq_rs": f"enqueue: Queue::add_bulk, 1000 jobs per call (sent as 1000 concurrent script calls, not one "
                     f"MULTI); throughput: 1 process, Worker concurrency {rcfg.get('concurrency', '?')}; latency: the "
                     f"same, idle; medians of {rcfg.get('rounds', '?')} runs",
        "celery": f"enqueue: apply_async in a loop (no bulk API); throughput: 1 `celery worker --pool=prefork "
                  f"--concurrency={ccfg.get('concurrency', '?')}`; latency: the same, idle; medians of "
                  f"{ccfg.get('rounds', '?')} runs",
    }

    header = ["scenario", *(name for _, name in PEERS), *(f"wasmq/{name}" for _, name in OTHERS), "better"]
    print(render(header, table))
    print()
    if machine:
        print(f"machine: {machine.get('cores', '?')} cores, Linux {machine.get('kernel', '?')}, "
              f"redis {machine.get('redis', '?')}")
    print(f"versions: wasmq {machine.get('wasmq', '?')}; BullMQ {bver.get('bullmq', '?')} (ioredis "
          f"{bver.get('ioredis', '?')}, Node {bver.get('node', '?')}); BullMQ Rust crate bullmq-official "
          f"{rver.get('bullmq-official', '?')} (redis-rs {rver.get('redis-rs', '?')}, tokio {rver.get('tokio', '?')}, "
          f"{rver.get('rustc', 'rustc ?')}); Celery {cver.get('celery', '?')} "
          f"(kombu {cver.get('kombu', '?')}, redis-py {cver.get('redis-py', '?')}, Python {cver.get('python', '?')})")
    if a.tasks and a.rate and a.duration:
        print(f"load: {a.tasks} tasks per enqueue/throughput run; latency: {a.rate:g} tasks/s for {a.duration:g} s")
    for p, name in PEERS:
        print(f"{name}: {setups[p]}")
    for p, name in PEERS:
        if p in saturated:
            print(f"* {name}'s throughput ({fmt(saturated[p])} tasks/s) is below the offered {a.rate:g} tasks/s: "
                  "its latencies include a growing backlog, not just an idle worker's response")
    for p, name in PEERS:
        sent = next((m.get("sent_s") for m in (docs[p] or {}).get("metrics", []) if m.get("sent_s")), None)
        if sent and a.duration and sent > 1.1 * a.duration:
            print(f"{name}'s producer sent the paced load in {sent:.2f} s instead of {a.duration:g} s "
                  f"(about {a.rate * a.duration / sent:.0f} tasks/s offered)")
    print("ratios are wasmq value / peer value: above 1 means wasmq's number is higher (better for "
          "tasks/s, worse for ms and MiB)")
    for e in problems:
        print(f"warning: {e}", file=sys.stderr)

    result = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "versions": {"wasmq": machine.get("wasmq"), "bullmq": bver, "bullmq_rs": rver, "celery": cver},
        "params": {"tasks": a.tasks, "rate": a.rate, "duration_s": a.duration, "wasmq_concurrency": a.wasmq_concurrency,
                   "peer_rounds": a.rounds},
        "setups": setups,
        "saturated_in_latency_run": {p: True for p in saturated},
        "rows": out_rows,
        "raw": docs,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
