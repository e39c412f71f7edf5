//! Real Redis deployments: a Sentinel-managed master/replica pair that fails over, and a
//! three-master Cluster. Every server is a `redis-server` started by the test on loopback.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{RedisServer, Wasmq, eventually};
use redis::Commands;
use wasmq_testkit::redis_server::ServerOptions;

fn conn(server: &RedisServer) -> redis::Connection {
    crate::common::redis_conn(server)
}

struct SentinelSetup {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
}

impl SentinelSetup {
    fn start() -> Self {
        // One password for the master, the replica and the sentinels, which log in to each other.
        let master = RedisServer::start().unwrap();
        let password = master.password().to_string();
        let replica = RedisServer::start_with(ServerOptions::default().password(&password).arg("replicaof", format!("127.0.0.1 {}", master.port()))).unwrap();
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(ServerOptions {
                    sentinel: true,
                    ..ServerOptions::default()
                        .password(&password)
                        .arg("sentinel monitor", format!("mymaster 127.0.0.1 {} 2", master.port()))
                        .arg("sentinel auth-pass", format!("mymaster {password}"))
                        .arg("sentinel down-after-milliseconds", "mymaster 1000")
                        .arg("sentinel failover-timeout", "mymaster 5000")
                        .arg("sentinel parallel-syncs", "mymaster 1")
                })
                .unwrap()
            })
            .collect();
        // Wait until the replica is in sync and every sentinel knows it and the other sentinels.
        let synced = eventually(Duration::from_secs(30), || {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut conn(&replica)).ok()?;
            info.contains("master_link_status:up").then_some(())
        });
        assert!(synced.is_some(), "the replica never synced");
        for s in &sentinels {
            let known = eventually(Duration::from_secs(30), || {
                let mut c = conn(s);
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL").arg("REPLICAS").arg("mymaster").query(&mut c).ok()?;
                let others: Vec<redis::Value> = redis::cmd("SENTINEL").arg("SENTINELS").arg("mymaster").query(&mut c).ok()?;
                (replicas.len() == 1 && others.len() == 2).then_some(())
            });
            assert!(known.is_some(), "sentinel {} never saw the whole setup", s.port());
        }
        Self { master, replica, sentinels }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port())).collect();
        // The data nodes' password in the user info, the sentinels' in the query.
        let password = self.master.password();
        format!("redis+sentinel://:{password}@{}/mymaster?sentinel_password={password}", hosts.join(","))
    }
}

#[test]
fn sentinel_failover_is_followed_by_workers_and_producers() {
    let mut setup = SentinelSetup::start();
    let w = Wasmq { url: setup.url(), prefix: "wasmq".into() };
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let mut workers: Vec<_> = (0..2).map(|_| w.spawn_worker(&["--lease", "3s", "--reap-interval", "1s"])).collect();

    // A producer that keeps enqueueing; every 10th task is --durable (on a replica before acked).
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, bool, Instant)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let producer = std::thread::spawn({
        let (url, stop, acked, failures) = (setup.url(), stop.clone(), acked.clone(), failures.clone());
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let options = wasmq::conn::RedisOptions { response_timeout: Duration::from_secs(2), ..wasmq::conn::RedisOptions::new(url) };
                let client = wasmq::client::Client::connect(options, "wasmq").await.unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let durable = i.is_multiple_of(10);
                    let opts = wasmq::client::EnqueueOptions { durable, ..Default::default() };
                    match client.enqueue("echo", format!("{i}").as_bytes(), &opts).await {
                        Ok(e) => acked.lock().unwrap().push((e.id.to_string(), durable, Instant::now())),
                        Err(e) => {
                            if std::env::var("HA_DEBUG").is_ok() {
                                eprintln!("enqueue error: {e}");
                            }
                            failures.lock().unwrap().push(Instant::now());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let before_kill = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    let killed_ms = wasmq::parse::now_ms();
    setup.master.kill();
    // The sentinels promote the replica.
    let promoted = eventually(Duration::from_secs(30), || {
        // The replica drops its clients while it is reconfigured: a refused connection is "not yet".
        let mut c = redis::Client::open(setup.replica.url()).ok()?.get_connection().ok()?;
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
        info.contains("role:master").then_some(killed_at.elapsed())
    })
    .expect("the replica was never promoted");
    // Producers and workers continue by themselves.
    let resumed = eventually(Duration::from_secs(30), || acked.lock().unwrap().iter().find(|(_, _, at)| *at > killed_at).map(|(_, _, at)| *at - killed_at))
        .expect("the producer never recovered");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let mut c = conn(&setup.replica);
    let state = |c: &mut redis::Connection, id: &str| -> Option<String> {
        c.hget(crate::common::task_key("default", id.rsplit(':').next().unwrap()), "state").unwrap()
    };
    // Every durable task acknowledged before the kill, and every task acknowledged after it, finishes.
    let must_finish: Vec<&(String, bool, Instant)> = acked.iter().filter(|(_, durable, at)| *durable || *at > killed_at).collect();
    let done = eventually(Duration::from_secs(60), || must_finish.iter().all(|(id, ..)| state(&mut c, id).as_deref() == Some("succeeded")).then_some(()));
    let lost_async: Vec<&String> = acked.iter().filter(|(id, _, _)| state(&mut c, id).is_none()).map(|(id, ..)| id).collect();
    assert!(
        done.is_some(),
        "tasks that must finish did not: {:?}",
        must_finish.iter().filter(|(id, ..)| state(&mut c, id).as_deref() != Some("succeeded")).take(5).collect::<Vec<_>>()
    );
    for wk in &mut workers {
        assert!(wk.is_running(), "a worker died: {}", wk.log());
        wk.signal(crate::common::Signal::TERM);
        assert_eq!(wk.wait(Duration::from_secs(20)), Some(0), "{}", wk.log());
    }
    let durable_before = acked.iter().filter(|(_, d, at)| *d && *at < killed_at).count();
    assert!(durable_before > 0, "no durable enqueue was acknowledged before the kill: the test proves nothing");
    // Processing: results written before the kill, and the first one after it.
    let finished: Vec<u64> =
        acked.iter().filter_map(|(id, ..)| c.hget(crate::common::task_key("default", id.rsplit(':').next().unwrap()), "finished").ok().flatten()).collect();
    let done_before = finished.iter().filter(|f| **f < killed_ms).count();
    assert!(done_before > 0, "no task had finished before the kill: workers were not running");
    let first_after = finished.iter().filter(|f| **f >= killed_ms).min().map(|f| f - killed_ms).expect("no task finished after the kill");
    eprintln!(
        "sentinel failover: replica promoted {:.1}s after the master was killed; the producer's first acknowledged enqueue came {:.1}s after the kill, \
         the workers' first result {:.1}s after it; \
         {} enqueues acknowledged ({before_kill} before the kill, {durable_before} of them durable: all finished); \
         {} non-durable acknowledged writes lost to asynchronous replication; {} enqueue errors during the failover",
        promoted.as_secs_f64(),
        resumed.as_secs_f64(),
        first_after as f64 / 1000.0,
        acked.len(),
        lost_async.len(),
        failures.lock().unwrap().len()
    );
    assert!(lost_async.iter().all(|id| acked.iter().any(|(i, d, _)| i == *id && !d)), "a durable task was lost");
}

struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    fn start(masters: usize) -> Self {
        // One password for every node.
        let password = wasmq_testkit::redis_server::random_password();
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(
                    ServerOptions::default()
                        .password(&password)
                        .arg("cluster-enabled", "yes")
                        .arg("cluster-config-file", "nodes.conf")
                        .arg("cluster-node-timeout", "2000"),
                )
                .unwrap()
            })
            .collect();
        let mut create = Command::new("redis-cli");
        // REDISCLI_AUTH rather than -a: it keeps the password out of the process list.
        create.env("REDISCLI_AUTH", &password).arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create.args(["--cluster-replicas", "0", "--cluster-yes"]).output().expect("redis-cli");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        for n in &nodes {
            let ok = eventually(Duration::from_secs(30), || {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn(n)).ok()?;
                info.contains("cluster_state:ok").then_some(())
            });
            assert!(ok.is_some(), "cluster never became ok");
        }
        Self { nodes }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis+cluster://:{}@{}", self.nodes[0].password(), hosts.join(","))
    }

    /// Queue names that land on each shard, one per shard.
    fn queue_per_shard(&self) -> Vec<String> {
        let mut queues: Vec<String> = Vec::new();
        let mut shards = HashSet::new();
        for i in 0..200 {
            let q = format!("q{i}");
            if shards.insert(self.node_of(&crate::common::qk(&q).pending())) {
                queues.push(q);
            }
            if shards.len() == self.nodes.len() {
                break;
            }
        }
        assert_eq!(queues.len(), self.nodes.len());
        queues
    }

    /// The node (index) that serves `key`.
    fn node_of(&self, key: &str) -> usize {
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut conn(&self.nodes[0])).unwrap();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn(&self.nodes[0])).unwrap();
        for range in slots {
            let parts: Vec<redis::Value> = redis::from_redis_value(range).unwrap();
            let (lo, hi): (u16, u16) = (redis::from_redis_value(parts[0].clone()).unwrap(), redis::from_redis_value(parts[1].clone()).unwrap());
            let node: Vec<redis::Value> = redis::from_redis_value(parts[2].clone()).unwrap();
            let port: u16 = redis::from_redis_value(node[1].clone()).unwrap();
            if (lo..=hi).contains(&slot) {
                return self.nodes.iter().position(|n| n.port() == port).unwrap();
            }
        }
        panic!("slot {slot} is served by nobody");
    }
}

#[test]
fn a_cluster_spreads_queues_over_shards_and_every_task_finishes_once() {
    let cluster = Cluster::start(3);
    let w = Wasmq { url: cluster.url(), prefix: "wasmq".into() };
    let queues = cluster.queue_per_shard();
    // Modules live wherever their hash puts them.
    w.push(&crate::common::fixture("echo.wat"), "echo");
    w.push(&crate::common::fixture("counter.wat"), "counter");
    let per_queue = 300;
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), (0..per_queue).map(|i| format!("{{\"n\":{i}}}\n")).collect::<String>()).unwrap();
    for q in &queues {
        let out = w.ok(&["enqueue", "echo", "--queue", q, "--inputs-file", file.path().to_str().unwrap()]);
        ids.insert(q.clone(), out.lines().map(str::to_string).collect());
    }
    let args: Vec<String> = queues.iter().flat_map(|q| ["--queue".to_string(), q.clone()]).chain(["--exit-when-idle".into()]).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = w.spawn_worker(&args);
    let mut b = w.spawn_worker(&args);
    assert_eq!(a.wait(Duration::from_secs(120)), Some(0), "{}", a.log());
    assert_eq!(b.wait(Duration::from_secs(120)), Some(0), "{}", b.log());
    let client = redis::cluster::ClusterClient::new(cluster.nodes.iter().map(|n| n.url()).collect::<Vec<_>>()).unwrap();
    let mut c = client.get_connection().unwrap();
    for (q, list) in &ids {
        for (i, id) in list.iter().enumerate() {
            let key = crate::common::task_key(&q.to_string(), id.rsplit(':').next().unwrap());
            let h: HashMap<String, String> = c.hgetall(&key).unwrap();
            assert_eq!(h.get("state").map(String::as_str), Some("succeeded"), "{id}: {h:?}");
            assert_eq!(h["lease"], "1", "{id} ran more than once");
            assert_eq!(h["output"], format!("{{\"n\":{i}}}"));
        }
        let stats: HashMap<String, u64> = c.hgetall(crate::common::qk(&q.to_string()).stats()).unwrap();
        assert_eq!(stats.get("succeeded"), Some(&(per_queue as u64)), "{q}");
    }
    // The CLI works against the cluster: stats, status, modules.
    assert!(w.ok(&["queue", "stats"]).lines().count() >= 4);
    let list = w.ok(&["module", "list"]);
    assert!(list.contains("echo") && list.contains("counter"), "{list}");
    eprintln!("cluster: queues {queues:?} on three shards, {} tasks, each run once", per_queue * 3);
}

/// Flows on a three-master Cluster: a map with a reduction tree and a chain with outputs as input
/// on a queue of each shard (a flow lives on its queue's hash tag), run by one worker.
#[test]
fn a_flow_on_a_cluster() {
    let cluster = Cluster::start(3);
    let w = Wasmq { url: cluster.url(), prefix: "wasmq".into() };
    let queues = cluster.queue_per_shard();
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), (1..=9).map(|i| format!("{i}\n")).collect::<String>()).unwrap();
    let args: Vec<String> = queues.iter().flat_map(|q| ["--queue".to_string(), q.clone()]).collect();
    let _worker = w.spawn_worker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for q in &queues {
        let out = w.ok(&["map", "echo", "--queue", q, "--inputs-file", file.path().to_str().unwrap(), "--reduce", "echo", "--reduce-fan-in", "3", "--wait"]);
        assert_eq!(out, "[[1,2,3],[4,5,6],[7,8,9]]", "{q}");
        let a = w.enqueue("echo", "\"a\"", &["--queue", q]);
        let b = w.ok(&["enqueue", "echo", "--queue", q, "--after", &a, "--input-from-after"]).trim().to_string();
        assert_eq!(w.run(&["result", &b, "--wait", "--timeout", "30s"]).status.code(), Some(0), "{q}");
        assert_eq!(w.ok(&["result", &b]), "[\"a\"]");
    }
}
