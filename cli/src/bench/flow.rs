//! The `flow` scenario: a map-reduce word count over a real corpus (full counts per 1 MiB chunk,
//! merge-counts as a reduction tree, two worker processes), checked against a native count of
//! the same text; then a flow of many no-op children, to show that a wide flow works and what it
//! costs per member.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmq::client::{EnqueueOptions, FlowOutput};
use wasmq::queue::task::field;
use wasmq::queue::{FlowRecord, FlowState, ParentFailure, QueueName, TaskId};

use super::{Bench, Metric, NOOP_WAT, WorkerProc, redis_cpu, used_memory};

/// The chunk size of the word count: whole files are packed into chunks of at most this many
/// bytes (a larger file is cut at whitespace, as `wasmq split` cuts it).
const CHUNK: usize = 1 << 20;
/// The reduction's fan-in (`map --reduce-fan-in`'s default).
const FAN_IN: usize = 16;
/// Worker processes, one run slot each: the run times then add up to the slot time.
const WORKERS: usize = 2;

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    let (Some(wordcount), Some(merge)) = (b.config.wordcount.clone(), b.config.merge_counts.clone()) else {
        eprintln!("    skipped: the example tasks could not be built (run from the source tree)");
        return Ok(());
    };
    b.push("bench-wordcount", &wordcount).await?;
    b.push("bench-merge-counts", &merge).await?;
    b.push("bench-noop", NOOP_WAT.as_bytes()).await?;
    let q = b.queue("flow");
    let cache = b.cache_dir.path().join("flow");
    let args = ["--concurrency", "1", "--max-input-size", "256MiB", "--prefetch", "1"];
    let mut workers: Vec<WorkerProc> = (0..WORKERS).map(|_| b.spawn_worker(&q, &args, &cache)).collect::<anyhow::Result<_>>()?;
    let r = async {
        // Warm up: both modules compiled in both workers before anything is timed.
        let warm: Vec<Vec<u8>> = (0..4).map(|i| serde_json::to_vec(&serde_json::json!({"text": format!("warm {i}"), "counts": true})).unwrap()).collect();
        let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
        let id = b.client.map("bench-wordcount", &warm, Some("bench-merge-counts"), 2, ParentFailure::Block, &opts).await?;
        finished(b, &id, Duration::from_secs(120), &mut workers).await?;
        corpus_count(b, &q, &mut workers).await?;
        // The wide flow of no-op tasks runs on workers set up as the throughput scenario's.
        drop(std::mem::take(&mut workers));
        let conc = b.config.concurrency.to_string();
        workers = (0..WORKERS).map(|_| b.spawn_worker(&q, &["--concurrency", &conc], &cache)).collect::<anyhow::Result<_>>()?;
        let id = b.client.map("bench-noop", &[Vec::new(), Vec::new()], Some("bench-noop"), 2, ParentFailure::Block, &opts).await?;
        finished(b, &id, Duration::from_secs(120), &mut workers).await?;
        wide_flow(b, &q, &mut workers).await
    }
    .await;
    drop(workers);
    b.drop_queue(&q).await?;
    r
}

/// Map-reduce wordcount over the corpus, checked against a native count.
async fn corpus_count(b: &mut Bench, q: &QueueName, workers: &mut [WorkerProc]) -> anyhow::Result<()> {
    let dir = b.config.corpus.clone();
    eprintln!("    reading the corpus in {}", dir.display());
    let files = tokio::task::spawn_blocking(move || read_corpus(&dir)).await??;
    anyhow::ensure!(!files.is_empty(), "no files in {}", b.config.corpus.display());
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    let nfiles = files.len();

    // The native count: file by file, one thread, the example's own word rules.
    let t = Instant::now();
    let mut native: HashMap<String, u64> = HashMap::new();
    for (_, text) in &files {
        for (w, n) in wordcount::count_words(text) {
            *native.entry(w).or_insert(0) += n;
        }
    }
    let native_secs = t.elapsed().as_secs_f64();
    let native = serde_json::to_value(wordcount::Output::summarize(native, wordcount::DEFAULT_TOP, true))?;

    let inputs = pack(&files);
    drop(files);
    let chunks = inputs.len();
    let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
    let at = b.client.db().anchor(q);
    let mut conn = b.client.conn();

    // The same chunks as plain tasks, no flow: what running them costs without the flow's
    // bookkeeping (and without a reduction).
    let done_before = |s: &wasmq::queue::QueueStats| s.succeeded + s.dead;
    let base = done_before(&b.client.stats(q).await?);
    let cpu_before = redis_cpu(&mut conn, &at).await?;
    let plain: Vec<u64> = b.client.enqueue_bulk("bench-wordcount", &inputs, &opts).await?.into_iter().map(|e| e.id.seq).collect();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while done_before(&b.client.stats(q).await?) < base + plain.len() as u64 {
        anyhow::ensure!(Instant::now() < deadline, "the plain tasks did not finish in an hour");
        anyhow::ensure!(workers.iter_mut().all(|w| w.running()), "a worker process exited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let plain_cpu = redis_cpu(&mut conn, &at).await? - cpu_before;
    let plain = timing(b, q, &plain, &[]).await?;

    let mem_before = used_memory(&mut conn, &at).await?;
    let cpu_before = redis_cpu(&mut conn, &at).await?;
    let t = Instant::now();
    let id = b.client.map("bench-wordcount", &inputs, Some("bench-merge-counts"), FAN_IN, ParentFailure::Block, &opts).await?;
    let created = t.elapsed().as_secs_f64();
    drop(inputs);
    let (f, peak_mem) = finished(b, &id, Duration::from_secs(3600), workers).await?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = redis_cpu(&mut conn, &at).await? - cpu_before;
    anyhow::ensure!(f.state == FlowState::Succeeded, "the flow ended {}", f.state.as_str());
    let FlowOutput::Reduced(out) = b.client.flow_output(&f).await? else { anyhow::bail!("the flow has no reducer") };
    let counted: serde_json::Value = serde_json::from_slice(&out).context("the flow's result is not JSON")?;
    anyhow::ensure!(counted == native, "the flow's counts differ from the native count (total {} vs {})", counted["total_words"], native["total_words"]);
    let (children, reducers) = b.client.db().flow_members(&mut conn, &id).await?;
    let timing = timing(b, q, &children, &reducers).await?;

    let mb = bytes as f64 / 1e6;
    b.report.push(Metric::new("flow", "corpus", mb, "MB").note(&format!(
        "{nfiles} files under {}, decompressed, decoded as UTF-8 lossily; {chunks} chunks of <= 1 MiB; {} reducers (fan-in {FAN_IN})",
        b.config.corpus.display(),
        f.reducers
    )));
    b.report.push(
        Metric::new("flow", "map-reduce wordcount, full counts", mb / wall, "MB/s")
            .note(&format!("{WORKERS} worker processes x 1 slot; {wall:.2} s from map to result ({created:.2} s in map itself); equals the native count")),
    );
    b.report.push(Metric::new("flow", "native wordcount, one thread", mb / native_secs, "MB/s").note("the same word rules in plain Rust, for scale"));
    b.report.push(Metric::new("flow", "flow overhead", timing.overhead(), "%").note(&format!(
        "first start to result ({:.2} s) against the same run times scheduled on {WORKERS} slots with no bookkeeping ({:.2} s; sum {:.2} s)",
        timing.span_us / 1e6,
        timing.ideal_us / 1e6,
        timing.sum_us / 1e6
    )));
    b.report.push(Metric::new("flow", "plain tasks' overhead", plain.overhead(), "%").note(&format!(
        "the same chunks as plain tasks, no flow: first start to last result ({:.2} s) against the ideal schedule ({:.2} s)",
        plain.span_us / 1e6,
        plain.ideal_us / 1e6
    )));
    b.report.push(
        Metric::new("flow", "flow bookkeeping", timing.overhead() - plain.overhead(), "% of run time")
            .note("the flow's overhead minus the plain tasks': what dependencies, reducers' inputs and flow counters add"),
    );
    b.report.push(Metric::new("flow", "Redis CPU", cpu / (timing.sum_us / 1e6) * 100.0, "% of task time").note(&format!(
        "{cpu:.2} s of Redis CPU for the flow's inputs, claims, results, outputs and bookkeeping; {:.1} % for the plain tasks",
        plain_cpu / (plain.sum_us / 1e6) * 100.0
    )));
    b.report.push(
        Metric::new("flow", "Redis memory, peak", peak_mem.saturating_sub(mem_before) as f64 / 1e6, "MB")
            .note("used_memory above the start, sampled during the flow: the chunks' inputs and full-count outputs dominate"),
    );
    Ok(())
}

/// A flow of `flow_children` no-op children with a no-op reduction tree.
async fn wide_flow(b: &mut Bench, q: &QueueName, workers: &mut [WorkerProc]) -> anyhow::Result<()> {
    let n = b.config.flow_children;
    let inputs = vec![Vec::new(); n];
    let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
    let at = b.client.db().anchor(q);
    let mem_before = used_memory(&mut b.client.conn(), &at).await?;
    let t = Instant::now();
    let id = b.client.map("bench-noop", &inputs, Some("bench-noop"), FAN_IN, ParentFailure::Block, &opts).await?;
    let created = t.elapsed().as_secs_f64();
    let (f, peak_mem) = finished(b, &id, Duration::from_secs(3600), workers).await?;
    let wall = t.elapsed().as_secs_f64();
    anyhow::ensure!(f.state == FlowState::Succeeded, "the flow of {n} ended {}", f.state.as_str());
    anyhow::ensure!(f.succeeded == f.children + f.reducers && f.children == n as u64, "{} of {} members succeeded", f.succeeded, f.children + f.reducers);
    let members = f.children + f.reducers;
    b.report.push(
        Metric::new("flow", &format!("flow of {n} no-op children"), members as f64 / wall, "tasks/s")
            .note(&format!("{members} members with the reducers; created in {created:.2} s, finished in {wall:.1} s")),
    );
    b.report.push(
        Metric::new("flow", "Redis memory per flow member, peak", peak_mem.saturating_sub(mem_before) as f64 / members as f64, "bytes")
            .note("used_memory above the start while the flow ran, over its members (results kept until retention)"),
    );
    Ok(())
}

/// Polls the flow until it ends, sampling Redis memory; returns it and the peak used_memory.
async fn finished(b: &Bench, id: &TaskId, timeout: Duration, workers: &mut [WorkerProc]) -> anyhow::Result<(FlowRecord, u64)> {
    let deadline = Instant::now() + timeout;
    let at = b.client.db().anchor(&id.queue);
    let mut conn = b.client.conn();
    let mut peak = 0;
    let mut looks = 0u64;
    loop {
        let f = b.client.flow(id).await?.with_context(|| format!("flow {id} vanished"))?;
        if looks.is_multiple_of(10) {
            peak = peak.max(used_memory(&mut conn, &at).await?);
        }
        looks += 1;
        if f.state.is_finished() {
            return Ok((f, peak.max(used_memory(&mut conn, &at).await?)));
        }
        anyhow::ensure!(workers.iter_mut().all(|w| w.running()), "a worker process exited");
        anyhow::ensure!(Instant::now() < deadline, "flow {id} did not finish in {timeout:?}: {} of {} done", f.succeeded, f.children + f.reducers);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long a flow's tasks ran, against how long they had to.
struct Timing {
    /// The sum of the members' run times.
    sum_us: f64,
    /// From the first member's start to the last one's end.
    span_us: f64,
    /// The makespan of the same run times on [`WORKERS`] slots with no bookkeeping at all: the
    /// members in the order the workers claim them (children in input order, then the reducers
    /// level by level), each on the first free slot once its parents ended.
    ideal_us: f64,
}

impl Timing {
    /// The span beyond the ideal schedule, in % of it.
    fn overhead(&self) -> f64 {
        (self.span_us / self.ideal_us - 1.0) * 100.0
    }
}

/// The timing of a flow's members (`children` in input order, then `reducers` level by level,
/// as `map` builds them), or of plain tasks (no reducers).
async fn timing(b: &Bench, q: &QueueName, children: &[u64], reducers: &[u64]) -> anyhow::Result<Timing> {
    let ids: Vec<TaskId> = children.iter().chain(reducers).map(|s| TaskId::new(q.clone(), *s)).collect();
    let rows = b.task_fields(&ids, &[field::DURATION_US, field::STARTED, field::FINISHED_US]).await?;
    let run: Vec<f64> = rows.iter().map(|r| r[0].unwrap_or(0) as f64).collect();
    let first_start_us = rows.iter().filter_map(|r| r[1]).min().unwrap_or(0) as f64 * 1e3;
    let last_end_us = rows.iter().filter_map(|r| r[2]).max().unwrap_or(0) as f64;
    // The tree as `map` builds it: each level's reducers over consecutive groups of the level
    // below.
    let mut ends: Vec<f64> = Vec::with_capacity(ids.len());
    let mut slots = [0f64; WORKERS];
    let mut schedule = |ready: f64, run: f64, ends: &mut Vec<f64>| {
        let slot = (0..WORKERS).min_by(|a, b| slots[*a].total_cmp(&slots[*b])).expect("slots");
        let end = ready.max(slots[slot]) + run;
        slots[slot] = end;
        ends.push(end);
    };
    for r in &run[..children.len()] {
        schedule(0.0, *r, &mut ends);
    }
    let mut level = 0..children.len();
    let mut next_reducer = children.len();
    while level.len() > 1 && !reducers.is_empty() {
        let start = next_reducer;
        for group in level.clone().step_by(FAN_IN) {
            let parents = group..(group + FAN_IN).min(level.end);
            let ready = ends[parents].iter().copied().fold(0.0, f64::max);
            let r = *run.get(next_reducer).context("the flow's reducers are not the tree `map` builds")?;
            schedule(ready, r, &mut ends);
            next_reducer += 1;
        }
        level = start..next_reducer;
    }
    Ok(Timing { sum_us: run.iter().sum(), span_us: last_end_us - first_start_us, ideal_us: ends.iter().copied().fold(0.0, f64::max) })
}

/// Whole files packed into inputs of at most [`CHUNK`] bytes of text (`{"text": ..., "counts":
/// true}`), a newline between two files; a larger file is cut at whitespace first. A newline is
/// whitespace, so the counts are those of the files counted one by one.
fn pack(files: &[(PathBuf, String)]) -> Vec<Vec<u8>> {
    let input = |text: &str| serde_json::to_vec(&serde_json::json!({"text": text, "counts": true})).expect("JSON");
    let mut out = Vec::new();
    let mut cur = String::new();
    for (_, text) in files {
        for piece in crate::split::chunks(text, CHUNK) {
            if !cur.is_empty() && cur.len() + 1 + piece.len() > CHUNK {
                out.push(input(&cur));
                cur.clear();
            }
            if !cur.is_empty() {
                cur.push('\n');
            }
            cur.push_str(piece);
        }
    }
    if !cur.is_empty() {
        out.push(input(&cur));
    }
    out
}

/// Every regular file under `dir` (symbolic links skipped: they name pages counted already), in
/// path order, gunzipped when its name ends in `.gz`, decoded as UTF-8 lossily.
pub fn read_corpus(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() {
                paths.push(e.path());
            }
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let raw = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let bytes = if p.extension().is_some_and(|x| x == "gz") {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).with_context(|| format!("cannot gunzip {}", p.display()))?;
            out
        } else {
            raw
        };
        files.push((p, String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(files)
}
