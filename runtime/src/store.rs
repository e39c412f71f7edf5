//! The content-addressed module store in Redis.
//!
//! A module's bytes live under `P:module:<sha256>`, so a key names exactly one content and pushing
//! the same bytes twice stores nothing new. Names are aliases (`P:modules`: name → sha256) that a
//! new push moves. Readers verify the hash of every fetch: bytes that were changed in Redis are
//! refused, never run.
//!
//! The store's keys are not in one hash slot (a Cluster spreads modules over its shards), so a push
//! is a sequence of single-key writes ordered so that an interrupted push never leaves a name or
//! an index entry pointing at missing bytes.

use redis::AsyncCommands;
use sha2::{Digest, Sha256};

use crate::conn::Conn;
use crate::parse::{self, ParseError};
use crate::queue::{Db, Keys, QueueName};

/// What went wrong with a module store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("module is {size} bytes, more than the limit of {max} bytes (--max-module-size)")]
    TooLarge { size: u64, max: u64 },
    #[error("unknown module {0:?}: no module has that name or hash (see `wasmq module list`)")]
    Unknown(String),
    #[error("module {0:?} is being removed (`wasmq module rm`); push it again to use it")]
    Removing(String),
    #[error("module {sha} failed its integrity check: the stored bytes hash to {actual}")]
    Integrity { sha: String, actual: String },
    #[error("module {sha} is still referenced by {tasks} unfinished task(s) in queue(s) {queues}; use --force to remove it anyway")]
    InUse { sha: String, tasks: u64, queues: String },
    #[error(transparent)]
    Name(#[from] ParseError),
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The SHA-256 of some bytes, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether bytes hold a core module (WASI preview 1) or a component (WASI preview 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleKind {
    Module,
    Component,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Module => "module",
            Self::Component => "component",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "module" => Some(Self::Module),
            "component" => Some(Self::Component),
            _ => None,
        }
    }
}

/// One stored module, for `module list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleInfo {
    pub sha256: String,
    pub names: Vec<String>,
    pub size: u64,
    pub kind: Option<ModuleKind>,
    pub pushed_ms: u64,
}

/// The result of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub sha256: String,
    /// False when the same bytes were already stored.
    pub stored: bool,
    /// The name that was pointed at the module, if any, and the hash it pointed at before.
    pub name: Option<String>,
    pub previous: Option<String>,
}

/// The module store of one key prefix.
#[derive(Clone)]
pub struct ModuleStore {
    conn: Conn,
    keys: Keys,
    max_size: u64,
}

/// Default largest module accepted by `push` (`--max-module-size`).
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 64 << 20;

/// The module-info field `module rm` sets while it removes the module.
const REMOVING: &str = "removing";

impl ModuleStore {
    pub fn new(conn: Conn, keys: Keys, max_size: u64) -> Self {
        Self { conn, keys, max_size }
    }

    /// Checks a module's size against the limit before anything is compiled or stored.
    pub fn check_size(&self, size: u64) -> Result<(), StoreError> {
        if size > self.max_size {
            return Err(StoreError::TooLarge { size, max: self.max_size });
        }
        Ok(())
    }

    /// Stores validated module bytes under their hash and points `name` at them.
    pub async fn push(&self, bytes: &[u8], kind: ModuleKind, name: Option<&str>) -> Result<Pushed, StoreError> {
        self.check_size(bytes.len() as u64)?;
        if let Some(n) = name {
            parse::module_name(n)?;
        }
        let sha = sha256_hex(bytes);
        let mut c = self.conn.clone();
        let now = parse::now_ms();
        // Bytes first, then their description, then the index, then the name.
        let stored: bool = redis::cmd("SET").arg(self.keys.module(&sha)).arg(bytes).arg("NX").query_async::<Option<String>>(&mut c).await?.is_some();
        let info_key = self.keys.module_info(&sha);
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(&info_key)
            .arg("size")
            .arg(bytes.len())
            .arg("kind")
            .arg(kind.as_str())
            .ignore()
            .cmd("HSETNX")
            .arg(&info_key)
            .arg("pushed")
            .arg(now)
            .ignore()
            // A push brings back a module that a `module rm` was removing (or died removing).
            .cmd("HDEL")
            .arg(&info_key)
            .arg(REMOVING)
            .ignore()
            .query_async(&mut c)
            .await?;
        let _: () = redis::cmd("ZADD").arg(self.keys.module_index()).arg("NX").arg(now).arg(&sha).query_async(&mut c).await?;
        let mut previous = None;
        if let Some(n) = name {
            previous = c.hget::<_, _, Option<String>>(self.keys.module_names(), n).await?.filter(|p| p != &sha);
            let _: () = c.hset(self.keys.module_names(), n, &sha).await?;
        }
        Ok(Pushed { sha256: sha, stored, name: name.map(str::to_string), previous })
    }

    /// Resolves a name or a hash to the hash of a stored module.
    pub async fn resolve(&self, name_or_hash: &str) -> Result<String, StoreError> {
        let mut c = self.conn.clone();
        let sha = if parse::is_sha256_hex(name_or_hash) {
            name_or_hash.to_string()
        } else {
            parse::module_name(name_or_hash)?;
            c.hget::<_, _, Option<String>>(self.keys.module_names(), name_or_hash).await?.ok_or_else(|| StoreError::Unknown(name_or_hash.to_string()))?
        };
        // Two commands, not a pipeline: on a Cluster the two keys live on different slots.
        let exists: bool = c.exists(self.keys.module(&sha)).await?;
        let removing: bool = c.hexists(self.keys.module_info(&sha), REMOVING).await?;
        if !exists {
            return Err(StoreError::Unknown(name_or_hash.to_string()));
        }
        if removing {
            return Err(StoreError::Removing(name_or_hash.to_string()));
        }
        Ok(sha)
    }

    /// True while `module rm` is removing the module: an enqueue that sees this after writing its
    /// task cancels the task (see `remove`).
    pub async fn is_removing(&self, sha: &str) -> Result<bool, StoreError> {
        Ok(self.conn.clone().hexists(self.keys.module_info(sha), REMOVING).await?)
    }

    /// Fetches a module's bytes and checks that they hash to `sha`.
    pub async fn fetch(&self, sha: &str) -> Result<Vec<u8>, StoreError> {
        let mut c = self.conn.clone();
        // Check the size before transferring anything: a module may have been written by hand.
        let size: u64 = c.strlen(self.keys.module(sha)).await?;
        if size > self.max_size {
            return Err(StoreError::TooLarge { size, max: self.max_size });
        }
        let bytes: Option<Vec<u8>> = c.get(self.keys.module(sha)).await?;
        let bytes = bytes.ok_or_else(|| StoreError::Unknown(sha.to_string()))?;
        let actual = sha256_hex(&bytes);
        if actual != sha {
            return Err(StoreError::Integrity { sha: sha.to_string(), actual });
        }
        Ok(bytes)
    }

    /// Every stored module with its names, oldest first.
    pub async fn list(&self) -> Result<Vec<ModuleInfo>, StoreError> {
        let mut c = self.conn.clone();
        // Written by anyone with access to Redis: names that are not UTF-8 are shown lossily
        // rather than failing the whole listing, and index entries that are not a hash skipped.
        let raw_index: Vec<(Vec<u8>, f64)> = c.zrange_withscores(self.keys.module_index(), 0, -1).await?;
        let index: Vec<(String, u64)> = raw_index
            .into_iter()
            .filter_map(|(sha, ms)| String::from_utf8(sha).ok().filter(|s| parse::is_sha256_hex(s)).map(|s| (s, ms.max(0.0) as u64)))
            .collect();
        let raw_names: Vec<(Vec<u8>, Vec<u8>)> = c.hgetall(self.keys.module_names()).await?;
        let names: Vec<(String, String)> =
            raw_names.into_iter().map(|(n, s)| (String::from_utf8_lossy(&n).into_owned(), String::from_utf8_lossy(&s).into_owned())).collect();
        let mut out = Vec::with_capacity(index.len());
        for (sha, pushed_ms) in index {
            let info: std::collections::HashMap<String, String> = c.hgetall(self.keys.module_info(&sha)).await.unwrap_or_default();
            let mut module_names: Vec<String> = names.iter().filter(|(_, s)| *s == sha).map(|(n, _)| n.clone()).collect();
            module_names.sort();
            out.push(ModuleInfo {
                size: info.get("size").and_then(|s| s.parse().ok()).unwrap_or(0),
                kind: info.get("kind").and_then(|k| ModuleKind::parse(k)),
                names: module_names,
                sha256: sha,
                pushed_ms,
            });
        }
        Ok(out)
    }

    /// The names pointing at a module, sorted (tasks store only the hash).
    pub async fn names_of(&self, sha: &str) -> Result<Vec<String>, StoreError> {
        let names: Vec<(Vec<u8>, Vec<u8>)> = self.conn.clone().hgetall(self.keys.module_names()).await?;
        let mut out: Vec<String> = names.into_iter().filter(|(_, s)| s == sha.as_bytes()).map(|(n, _)| String::from_utf8_lossy(&n).into_owned()).collect();
        out.sort();
        Ok(out)
    }

    /// Unfinished tasks that reference `sha`, per queue.
    pub async fn references(&self, sha: &str) -> Result<Vec<(QueueName, u64)>, StoreError> {
        let mut c = self.conn.clone();
        let db = Db::new(self.keys.prefix());
        let mut refs = Vec::new();
        for q in db.queues(&mut c).await? {
            let n = db.module_references(&mut c, &q, sha).await?;
            if n > 0 {
                refs.push((q, n));
            }
        }
        Ok(refs)
    }

    /// Removes a module (its bytes, description, index entry and every name pointing at it).
    /// Refuses while unfinished tasks reference it, unless `force`.
    pub async fn remove(&self, name_or_hash: &str, force: bool) -> Result<String, StoreError> {
        let mut c = self.conn.clone();
        let sha = if parse::is_sha256_hex(name_or_hash) {
            let known: bool = c.exists(self.keys.module(name_or_hash)).await?;
            let indexed: Option<f64> = c.zscore(self.keys.module_index(), name_or_hash).await?;
            if !known && indexed.is_none() {
                return Err(StoreError::Unknown(name_or_hash.to_string()));
            }
            name_or_hash.to_string()
        } else {
            parse::module_name(name_or_hash)?;
            c.hget::<_, _, Option<String>>(self.keys.module_names(), name_or_hash).await?.ok_or_else(|| StoreError::Unknown(name_or_hash.to_string()))?
        };
        // Mark first, then look for references: an enqueue writes its task first and then looks
        // for the mark (cancelling its task when it finds it). Whichever of the two looks last
        // sees the other's write, so no task is left referencing a removed module.
        let _: () = c.hset(self.keys.module_info(&sha), REMOVING, 1).await?;
        let refs = match self.references(&sha).await {
            Ok(r) => r,
            Err(e) => {
                let _: redis::RedisResult<()> = c.hdel(self.keys.module_info(&sha), REMOVING).await;
                return Err(e);
            }
        };
        if !refs.is_empty() && !force {
            let _: () = c.hdel(self.keys.module_info(&sha), REMOVING).await?;
            let tasks = refs.iter().map(|(_, n)| n).sum();
            let queues = refs.iter().map(|(q, _)| q.as_str()).collect::<Vec<_>>().join(", ");
            return Err(StoreError::InUse { sha, tasks, queues });
        }
        // Names first, so nothing resolves to the module while its bytes go away.
        let names: Vec<(Vec<u8>, Vec<u8>)> = c.hgetall(self.keys.module_names()).await?;
        for (n, s) in names {
            if s == sha.as_bytes() {
                let _: () = c.hdel(self.keys.module_names(), n).await?;
            }
        }
        let _: () = c.zrem(self.keys.module_index(), &sha).await?;
        let _: () = c.del(self.keys.module_info(&sha)).await?;
        let _: () = c.del(self.keys.module(&sha)).await?;
        Ok(sha)
    }
}
