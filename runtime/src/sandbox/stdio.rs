//! In-memory stdout and stderr with hard limits.
//!
//! stdout is the task's result: when a task writes past the cap, the write traps with
//! [`OutputLimitExceeded`], so a flood ends the task at once and is reported as `output_limit`
//! (a silently truncated result would look valid). stderr is only a log: it keeps the first bytes
//! up to its cap, drops the rest and remembers that it did, and the task runs on.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The error a stdout write past the cap traps with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the task wrote more than {cap} bytes to stdout")]
pub struct OutputLimitExceeded {
    pub cap: usize,
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    overflowed: bool,
}

/// A capped in-memory output stream; clones share the buffer.
#[derive(Debug, Clone)]
pub struct CappedPipe {
    buffer: Arc<Mutex<Buffer>>,
    cap: usize,
    /// Trap on overflow (stdout) rather than truncate (stderr).
    strict: bool,
}

/// Largest write a guest is offered at once; bounds what the host buffers per call.
const WRITE_BUDGET: usize = 64 * 1024;

impl CappedPipe {
    /// stdout: a write past `cap` traps.
    pub fn strict(cap: usize) -> Self {
        Self { buffer: Default::default(), cap, strict: true }
    }

    /// stderr: bytes past `cap` are dropped and the pipe is marked truncated.
    pub fn truncating(cap: usize) -> Self {
        Self { buffer: Default::default(), cap, strict: false }
    }

    /// Appends as much as fits; false when something did not fit.
    fn push(&self, b: &[u8]) -> bool {
        let mut g = self.buffer.lock().expect("stdio lock");
        let n = b.len().min(self.cap.saturating_sub(g.bytes.len()));
        g.bytes.extend_from_slice(&b[..n]);
        if n < b.len() {
            g.overflowed = true;
            return false;
        }
        true
    }

    /// Appends a line of the host's own (a refused HTTP request, say), within the same cap.
    pub(crate) fn note(&self, line: &str) {
        self.push(line.as_bytes());
    }

    /// The bytes written so far and whether anything was cut off.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut g = self.buffer.lock().expect("stdio lock");
        (std::mem::take(&mut g.bytes), g.overflowed)
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !self.push(&bytes) && self.strict {
            return Err(StreamError::Trap(wasmtime::Error::new(OutputLimitExceeded { cap: self.cap })));
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Never "closed": a strict pipe must see the overflowing write to trap on it.
        Ok(WRITE_BUDGET)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        if !self.push(b) && self.strict {
            return Poll::Ready(Err(std::io::Error::other(OutputLimitExceeded { cap: self.cap })));
        }
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_pipe_traps_past_cap_and_truncating_pipe_drops() {
        let mut out = CappedPipe::strict(4);
        assert!(out.write(Bytes::from_static(b"abcd")).is_ok());
        assert!(matches!(out.write(Bytes::from_static(b"e")), Err(StreamError::Trap(_))));
        assert_eq!(out.take(), (b"abcd".to_vec(), true));

        let mut log = CappedPipe::truncating(3);
        assert!(log.write(Bytes::from_static(b"hello")).is_ok());
        assert!(log.write(Bytes::from_static(b"more")).is_ok());
        assert_eq!(log.take(), (b"hel".to_vec(), true));
    }
}
