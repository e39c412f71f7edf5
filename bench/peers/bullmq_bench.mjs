#!/usr/bin/env node
// BullMQ peer of `wasmq bench` (enqueue, throughput, latency); see README.md beside this file.
//
//   node bullmq_bench.mjs --redis-url redis://127.0.0.1:PORT [--scenario enqueue|throughput|latency]...
//        [--tasks N] [--rate R] [--duration SECONDS] [--concurrency 50] [--rounds 3]
//
// Prints one JSON object on stdout: {"peer": "bullmq", "versions": {...}, "config": {...}, "metrics": [...]}.
// Progress goes to stderr. The same file is the worker process (`--role worker-throughput` or
// `--role worker-latency`): the producer and the worker always run in separate Node processes, as
// wasmq's bench runs its workers as separate processes.
//
// Every timestamp is wall-clock milliseconds since the epoch with a microsecond fraction,
// `performance.timeOrigin + performance.now()`, so the producer's and the worker's clocks agree.
//
// BullMQ options: library defaults everywhere (jobs are kept after completion, as by default:
// no removeOnComplete), except the Worker's `concurrency` (50 by default here) and what the
// Worker needs to run at all (a connection). Job data is `{}`, the processor is `async () => {}`.

import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

const here = dirname(fileURLToPath(import.meta.url));
const depsDir = process.env.BULLMQ_DEPS_DIR || join(here, '.deps', 'node');
let bullmq;
try {
  bullmq = createRequire(join(depsDir, 'package.json'))('bullmq');
} catch (e) {
  console.error(`bullmq_bench: cannot load bullmq from ${depsDir} (run bench/peers/run.sh, which installs it): ${e.message}`);
  process.exit(2);
}
const { Queue, Worker } = bullmq;

const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(...a);

function parseArgs(argv) {
  const o = { scenario: [], tasks: 20000, rate: 500, duration: 10, concurrency: 50, rounds: 3, role: 'bench' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i];
    if (v === undefined) throw new Error(`${k} needs a value`);
    switch (k) {
      case '--redis-url': o.redisUrl = v; break;
      case '--scenario': o.scenario.push(v); break;
      case '--tasks': o.tasks = Number(v); break;
      case '--rate': o.rate = Number(v); break;
      case '--duration': o.duration = Number(v); break;
      case '--concurrency': o.concurrency = Number(v); break;
      case '--rounds': o.rounds = Number(v); break;
      case '--role': o.role = v; break;
      case '--queue': o.queue = v; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!o.redisUrl) throw new Error('--redis-url is required');
  connectionOf(o.redisUrl); // validates it
  for (const k of ['tasks', 'rate', 'duration', 'concurrency', 'rounds']) {
    if (!(o[k] > 0)) throw new Error(`--${k} must be positive`);
  }
  if (o.scenario.length === 0) o.scenario = ['enqueue', 'throughput', 'latency'];
  return o;
}

function connectionOf(url) {
  const u = new URL(url);
  if (u.protocol !== 'redis:' || !u.hostname || !u.port) throw new Error(`--redis-url must be redis://HOST:PORT[/DB] with an explicit port, not ${url}`);
  const c = { host: u.hostname, port: Number(u.port) };
  const db = u.pathname.replace(/^\//, '');
  if (db) c.db = Number(db);
  if (u.username) c.username = decodeURIComponent(u.username);
  if (u.password) c.password = decodeURIComponent(u.password);
  return c;
}

function pct(sorted, p) {
  // Same rule as wasmq's bench: the element at round((len - 1) * p).
  return sorted.length ? sorted[Math.round((sorted.length - 1) * p)] : null;
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function versionOf(pkg) {
  try {
    return JSON.parse(readFileSync(join(depsDir, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
}

// ---------------------------------------------------------------- worker processes

// Throughput worker: runs until `tasks` jobs completed, then prints
// {"first_start_ms", "last_completed_ms", "completed", "failed"} and exits.
// first start = the first call of the processor; last completed = the last 'completed' event,
// which BullMQ emits after moveToCompleted has written the job's result into Redis.
async function workerThroughput(o) {
  let first = null;
  let last = null;
  let completed = 0;
  let failed = 0;
  let done = false;
  const worker = new Worker(
    o.queue,
    async () => {
      if (first === null) first = nowMs();
    },
    { connection: connectionOf(o.redisUrl), concurrency: o.concurrency },
  );
  const finish = () => {
    if (done) return;
    done = true;
    const out = JSON.stringify({ first_start_ms: first, last_completed_ms: last, completed, failed }) + '\n';
    process.stdout.write(out, () => {
      worker.close(true).finally(() => process.exit(0));
    });
  };
  worker.on('completed', () => {
    last = nowMs();
    if (++completed + failed >= o.tasks) finish();
  });
  worker.on('failed', () => {
    if (completed + ++failed >= o.tasks) finish();
  });
  worker.on('error', (e) => log(`bullmq worker: ${e.message}`));
}

// Latency worker: prints "ready" once connected, records the completion time of every job,
// and on "dump" (a line on stdin) prints {"completed_ms": {id: ms}} and exits.
async function workerLatency(o) {
  const times = {};
  const worker = new Worker(o.queue, async () => {}, { connection: connectionOf(o.redisUrl), concurrency: o.concurrency });
  worker.on('completed', (job) => {
    times[job.id] = nowMs();
  });
  worker.on('error', (e) => log(`bullmq worker: ${e.message}`));
  await worker.waitUntilReady();
  process.stdout.write('ready\n');
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.trim() === 'dump') break;
  }
  process.stdout.write(JSON.stringify({ completed_ms: times }) + '\n', () => {
    worker.close(true).finally(() => process.exit(0));
  });
}

// ---------------------------------------------------------------- producer side

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
});

function spawnWorker(o, role, queue) {
  const args = [fileURLToPath(import.meta.url), '--role', role, '--queue', queue, '--redis-url', o.redisUrl,
    '--tasks', String(o.tasks), '--concurrency', String(o.concurrency)];
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  child.peakRss = 0;
  child.sampleRss = () => {
    // Peak resident set size so far (VmHWM), as wasmq's bench samples its worker processes.
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) child.peakRss = Math.max(child.peakRss, Number(m[1]) * 1024);
    } catch {}
  };
  const rl = createInterface({ input: child.stdout });
  const lines = [];
  const waiters = [];
  rl.on('line', (l) => (waiters.length ? waiters.shift()(l) : lines.push(l)));
  rl.on('close', () => {
    while (waiters.length) waiters.shift()(null);
  });
  child.nextLine = (timeoutMs) => new Promise((resolve, reject) => {
    if (lines.length) return resolve(lines.shift());
    const t = setTimeout(() => reject(new Error(`no answer from the ${role} process within ${timeoutMs / 1000} s`)), timeoutMs);
    waiters.push((l) => {
      clearTimeout(t);
      l === null ? reject(new Error(`the ${role} process exited without answering`)) : resolve(l);
    });
  });
  return child;
}

async function addAll(queue, n) {
  const jobs = Array.from({ length: n }, () => ({ name: 'noop', data: {} }));
  for (let i = 0; i < n; i += 1000) {
    await queue.addBulk(jobs.slice(i, i + 1000));
  }
}

async function withQueue(o, name, f) {
  const queue = new Queue(name, { connection: connectionOf(o.redisUrl) });
  try {
    await queue.waitUntilReady();
    return await f(queue);
  } finally {
    // Like wasmq's bench, each run deletes its queue afterwards.
    await queue.obliterate({ force: true }).catch((e) => log(`    cannot obliterate ${name}: ${e.message}`));
    await queue.close();
  }
}

const metrics = [];
function metric(key, scenario, name, value, unit, note, extra = {}) {
  const m = { key, scenario, name, value: Number.isFinite(value) ? value : null, unit, note, ...extra };
  log(`    ${name}: ${m.value === null ? '-' : m.value.toFixed(m.value >= 100 ? 0 : 3)} ${unit}`);
  metrics.push(m);
}

// Bulk enqueue: N no-op jobs with Queue.addBulk in chunks of 1000 (one MULTI per chunk), chunks one
// after another; median of `rounds` runs.
async function enqueue(o) {
  const rates = [];
  for (let round = 0; round < o.rounds; round++) {
    await withQueue(o, `bench-enqueue-${process.pid}-${round}`, async (queue) => {
      const jobs = Array.from({ length: o.tasks }, () => ({ name: 'noop', data: {} }));
      const t = nowMs();
      for (let i = 0; i < jobs.length; i += 1000) {
        await queue.addBulk(jobs.slice(i, i + 1000));
      }
      const secs = (nowMs() - t) / 1000;
      const count = await queue.count();
      if (count !== o.tasks) throw new Error(`enqueued ${count} of ${o.tasks}`);
      rates.push(o.tasks / secs);
    });
  }
  metric('enqueue', 'enqueue', 'bulk enqueue (Queue.addBulk, 1000 per call)', median(rates), 'tasks/s',
    `median of ${o.rounds} runs of ${o.tasks}`);
}

// Throughput: N jobs enqueued first, then one worker process (concurrency C) drains them;
// first processor call to last 'completed' event, median of `rounds` runs.
async function throughput(o) {
  const rates = [];
  let peak = 0;
  for (let round = 0; round < o.rounds; round++) {
    await withQueue(o, `bench-noop-${process.pid}-${round}`, async (queue) => {
      await addAll(queue, o.tasks);
      const child = spawnWorker(o, 'worker-throughput', queue.name);
      const sampler = setInterval(child.sampleRss, 50);
      let answer;
      try {
        answer = JSON.parse(await child.nextLine(600_000));
      } finally {
        clearInterval(sampler);
        child.sampleRss();
      }
      const exited = await Promise.race([child.exited, sleep(10_000).then(() => null)]);
      if (!exited) child.kill('SIGKILL');
      peak = Math.max(peak, child.peakRss);
      if (answer.completed !== o.tasks) throw new Error(`${answer.completed} of ${o.tasks} jobs completed (${answer.failed} failed)`);
      rates.push(o.tasks / ((answer.last_completed_ms - answer.first_start_ms) / 1000));
    });
  }
  metric('throughput', 'noop', `throughput, 1 worker process x concurrency ${o.concurrency}`, median(rates), 'tasks/s',
    `median of ${o.rounds} runs of ${o.tasks}, first start to last completed`);
  metric('rss', 'noop', 'worker peak RSS, 1 process', peak / 2 ** 20, 'MiB', 'VmHWM of the worker process');
}

async function waitCompleted(queue, n, timeoutMs) {
  const start = nowMs();
  for (;;) {
    const c = (await queue.getCompletedCount()) + (await queue.getFailedCount());
    if (c >= n) return;
    if (nowMs() - start > timeoutMs) throw new Error(`${c} of ${n} jobs finished after ${timeoutMs / 1000} s`);
    await sleep(50);
  }
}

// Latency: one idle worker process (concurrency C), warmed up with 4 jobs; the producer adds one
// job every 1/R s for D s (queue.add awaited each time; when it falls behind it catches up without
// sleeping); latency = completion time in the worker ('completed' event) - submit time here.
async function latency(o) {
  await withQueue(o, `bench-latency-${process.pid}`, async (queue) => {
    const child = spawnWorker(o, 'worker-latency', queue.name);
    try {
      const ready = await child.nextLine(60_000);
      if (ready !== 'ready') throw new Error(`unexpected answer from the worker: ${ready}`);
      for (let i = 0; i < 4; i++) await queue.add('noop', {});
      await waitCompleted(queue, 4, 60_000);
      await sleep(500);
      const total = Math.floor(o.rate * o.duration);
      const sent = [];
      const t0 = performance.now();
      for (let i = 0; i < total; i++) {
        const wait = t0 + (i * 1000) / o.rate - performance.now();
        if (wait > 0) await sleep(wait);
        const submit = nowMs();
        const job = await queue.add('noop', {});
        sent.push([job.id, submit]);
      }
      const elapsed = (performance.now() - t0) / 1000;
      await waitCompleted(queue, 4 + total, 120_000);
      child.stdin.write('dump\n');
      const { completed_ms: done } = JSON.parse(await child.nextLine(30_000));
      const lat = sent.filter(([id]) => done[id] !== undefined).map(([id, submit]) => done[id] - submit).sort((a, b) => a - b);
      if (lat.length !== total) throw new Error(`${lat.length} of ${total} jobs have a completion time`);
      const note = `${total} no-op jobs at ${o.rate}/s (sent in ${elapsed.toFixed(2)} s) into 1 idle worker process x concurrency ${o.concurrency}; submit -> completed`;
      metric('latency_p50', 'latency', 'end-to-end p50', pct(lat, 0.5), 'ms', note, { sent_s: elapsed });
      metric('latency_p99', 'latency', 'end-to-end p99', pct(lat, 0.99), 'ms', note, { sent_s: elapsed });
      metric('latency_max', 'latency', 'end-to-end max', pct(lat, 1), 'ms', note, { sent_s: elapsed });
    } finally {
      child.stdin.end(); // the worker dumps (if not yet) and exits when its stdin closes
      const exited = await Promise.race([child.exited, sleep(10_000).then(() => null)]);
      if (!exited) child.kill('SIGKILL');
    }
  });
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.role === 'worker-throughput') return workerThroughput(o);
  if (o.role === 'worker-latency') return workerLatency(o);
  if (o.role !== 'bench') throw new Error(`unknown role ${o.role}`);
  // Exit through process.exit so that the 'exit' handler kills the worker processes.
  process.on('SIGTERM', () => process.exit(143));
  process.on('SIGINT', () => process.exit(130));
  const scenarios = { enqueue, throughput, latency };
  for (const s of o.scenario) {
    if (!scenarios[s]) throw new Error(`unknown scenario ${s}`);
    log(`==> bullmq: ${s}`);
    try {
      await scenarios[s](o);
    } catch (e) {
      log(`    failed: ${e.message}`);
      metrics.push({ key: s, scenario: s, name: 'failed', value: null, unit: '', note: e.message });
    }
  }
  const out = {
    peer: 'bullmq',
    versions: { bullmq: versionOf('bullmq'), ioredis: versionOf('ioredis'), node: process.version },
    config: { tasks: o.tasks, rate: o.rate, duration_s: o.duration, concurrency: o.concurrency, rounds: o.rounds },
    metrics,
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n', () => process.exit(metrics.some((m) => m.name === 'failed') ? 1 : 0));
}

main().catch((e) => {
  console.error(`bullmq_bench: ${e.message}`);
  process.exit(1);
});
