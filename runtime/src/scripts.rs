//! The Lua scripts that make every state change of a queue atomic. Each script is a file in
//! `src/lua/` whose header names its KEYS and ARGV; `lib.lua` holds the helpers they share and is
//! prepended to each, so one formula (the pending score, the finish bookkeeping) exists once.

use std::sync::LazyLock;

use redis::Script;

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
