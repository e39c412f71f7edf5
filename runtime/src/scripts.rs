//! The Lua scripts that make every state change of a queue atomic. Each script is a file in
//! `src/lua/` whose header names its KEYS and ARGV; `lib.lua` holds the helpers they share and is
//! prepended to each, so one formula (the pending score, the finish bookkeeping) exists once.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use crate::keys::QueueKeys;

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`src/lua/", $file, "`")]
        pub static $name: LazyLock<Script> = LazyLock::new(|| Script::new(concat!(include_str!("lua/lib.lua"), "\n", include_str!(concat!("lua/", $file)))));
    };
}

script!(ENQUEUE, "enqueue.lua");
script!(ENQUEUE_BULK, "enqueue_bulk.lua");
script!(CLAIM, "claim.lua");
script!(COMPLETE, "complete.lua");
script!(HEARTBEAT, "heartbeat.lua");
script!(REAP, "reap.lua");
script!(CANCEL, "cancel.lua");
script!(WAIT, "wait.lua");
script!(RETRY_DEAD, "retry_dead.lua");
script!(PURGE, "purge.lua");
script!(SCHEDULE_FIRE, "schedule_fire.lua");
script!(REPOLICY, "repolicy.lua");

/// The queue keys a script takes, in the order its header lists them: one definition per script
/// for every caller (worker, client, tests).
pub mod keys {
    use super::QueueKeys;

    /// `enqueue.lua`, `enqueue_bulk.lua`, and the first eight of `schedule_fire.lua`.
    pub fn enqueue(k: &QueueKeys) -> [String; 8] {
        [k.seq(), k.pending(), k.delayed(), k.meta(), k.stats(), k.modrefs(), k.signal(), k.estimates()]
    }

    /// `claim.lua`.
    pub fn claim(k: &QueueKeys) -> [String; 6] {
        [k.pending(), k.delayed(), k.active(), k.meta(), k.signal(), k.estimates()]
    }

    /// `complete.lua`.
    pub fn complete(k: &QueueKeys) -> [String; 11] {
        [k.active(), k.pending(), k.delayed(), k.succeeded(), k.dead(), k.cancelled(), k.stats(), k.modrefs(), k.estimates(), k.meta(), k.signal()]
    }

    /// `reap.lua`.
    pub fn reap(k: &QueueKeys) -> [String; 9] {
        [k.active(), k.pending(), k.dead(), k.cancelled(), k.stats(), k.modrefs(), k.meta(), k.estimates(), k.signal()]
    }
}

/// An invocation of `script` with `keys` as its KEYS; the caller adds the ARGV.
pub fn invocation<'a>(script: &'a Script, keys: impl IntoIterator<Item = String>) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for key in keys {
        inv.key(key);
    }
    inv
}
