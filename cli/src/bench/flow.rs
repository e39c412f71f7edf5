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
    let mem_before = used_memory(&mut conn, &at).await?;
    let cpu_before = redis_cpu(&mut conn, &at).await?;
    let t = Instant::now();
    let id = b.client.map("bench-wordcount", &inputs, Some("bench-merge-counts"), FAN_IN, ParentFailure::Block, &opts).await?;
    drop(inputs);
    let (f, peak_mem) = finished(b, &id, Duration::from_secs(3600), workers).await?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = redis_cpu(&mut conn, &at).await? - cpu_before;
    anyhow::ensure!(f.state == FlowState::Succeeded, "the flow ended {}", f.state.as_str());
    let run_us = run_time_us(b, &id).await?;
    let FlowOutput::Reduced(out) = b.client.flow_output(&f).await? else { anyhow::bail!("the flow has no reducer") };
    let counted: serde_json::Value = serde_json::from_slice(&out).context("the flow's result is not JSON")?;
    anyhow::ensure!(counted == native, "the flow's counts differ from the native count (total {} vs {})", counted["total_words"], native["total_words"]);

    let mb = bytes as f64 / 1e6;
    let slots = WORKERS as f64;
    let members = f.children + f.reducers;
    b.report.push(Metric::new("flow", "corpus", mb, "MB").note(&format!(
        "{} files under {}, decompressed, decoded as UTF-8 lossily; {chunks} chunks of <= 1 MiB; {} reducers (fan-in {FAN_IN})",
        nfiles,
        b.config.corpus.display(),
        f.reducers
    )));
    b.report.push(
        Metric::new("flow", "map-reduce wordcount, full counts", mb / wall, "MB/s")
            .note(&format!("{WORKERS} worker processes x 1 slot; {wall:.1} s from map to result; equals the native count")),
    );
    b.report.push(Metric::new("flow", "native wordcount, one thread", mb / native_secs, "MB/s").note("the same word rules in plain Rust, for scale"));
    b.report.push(Metric::new("flow", "flow overhead", ((wall * slots * 1e6 - run_us) / run_us * 100.0).max(0.0), "%").note(&format!(
        "slot time not spent in tasks, against the sum of the {members} tasks' run times ({:.1} s); includes the reduction's tail",
        run_us / 1e6
    )));
    b.report.push(
        Metric::new("flow", "Redis CPU", cpu / (run_us / 1e6) * 100.0, "% of task time")
            .note(&format!("{:.2} s of Redis CPU for claims, results, outputs and the flow's bookkeeping", cpu)),
    );
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
        if looks % 10 == 0 {
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

/// The sum of the run times of a flow's members, µs.
async fn run_time_us(b: &Bench, id: &TaskId) -> anyhow::Result<f64> {
    let (children, reducers) = b.client.db().flow_members(&mut b.client.conn(), id).await?;
    let ids: Vec<TaskId> = children.into_iter().chain(reducers).map(|s| TaskId::new(id.queue.clone(), s)).collect();
    let rows = b.task_fields(&ids, &[field::DURATION_US]).await?;
    Ok(rows.iter().filter_map(|r| r[0]).sum::<u64>() as f64)
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
