//! Deterministic mode: the same module and input give the same output on every run and host.
//!
//! The wall clock is fixed at 2000-01-01T00:00:00Z, the monotonic clock starts at zero and
//! advances by exactly 1 ms each time it is read, and both random sources produce a fixed
//! pseudo-random sequence (the same seed for every task).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// 2000-01-01T00:00:00Z in seconds since the Unix epoch.
pub const FIXED_WALL_CLOCK_SECS: u64 = 946_684_800;
/// The seed of the random sequence.
pub const SEED: u64 = 0x5EED_0F3A_53A5;

struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_WALL_CLOCK_SECS)
    }
}

/// Advances 1 ms per read, so that loops measuring elapsed time still terminate.
#[derive(Default)]
struct SteppingClock(AtomicU64);

impl HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1_000_000, Ordering::Relaxed)
    }
}

/// A fixed pseudo-random byte sequence (splitmix64 from [`SEED`]), long enough not to repeat
/// within a typical task.
fn sequence(len: usize, salt: u64) -> Vec<u8> {
    let mut x = SEED ^ salt;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

pub(crate) fn apply(b: &mut WasiCtxBuilder) {
    b.wall_clock(FixedWallClock)
        .monotonic_clock(SteppingClock::default())
        .secure_random(Deterministic::new(sequence(64 << 10, 1)))
        .insecure_random(Deterministic::new(sequence(64 << 10, 2)))
        .insecure_random_seed(u128::from(SEED));
}
