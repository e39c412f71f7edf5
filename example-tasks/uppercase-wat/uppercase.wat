;; uppercase: a wasmq task written by hand in WebAssembly text, without the SDK.
;;
;; It shows that the task contract is language-neutral: a WASI (preview 1)
;; command that reads stdin, writes stdout and exits 0. Every ASCII letter
;; a-z becomes A-Z; all other bytes, including UTF-8 sequences, pass through
;; unchanged (their bytes are all >= 0x80, so they never fall in a-z).
;;
;; Memory layout (one 64 KiB page):
;;   0..8       iovec {buf_ptr: i32, buf_len: i32} shared by fd_read and fd_write
;;   8..12      nread / nwritten result cell
;;   1024..     I/O buffer, 32 KiB
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  (global $iov i32 (i32.const 0))
  (global $count i32 (i32.const 8))
  (global $buf i32 (i32.const 1024))
  (global $buf_cap i32 (i32.const 32768))

  ;; ASCII-uppercase `len` bytes starting at `ptr`, in place.
  (func $upcase (param $ptr i32) (param $len i32)
    (local $end i32)
    (local $c i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $ptr)))
        ;; c - 'a' <= 'z' - 'a' (unsigned) is the single-compare range test.
        (if (i32.le_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 25))
          (then
            (i32.store8 (local.get $ptr) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $next))))

  ;; Write `len` bytes at `ptr` to stdout, looping over short writes.
  ;; Exits with status 1 if the host reports an error.
  (func $write_all (param $ptr i32) (param $len i32)
    (local $n i32)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (global.get $iov) (local.get $ptr))
        (i32.store (i32.add (global.get $iov) (i32.const 4)) (local.get $len))
        (if (i32.ne
              (call $fd_write (i32.const 1) (global.get $iov) (i32.const 1) (global.get $count))
              (i32.const 0))
          (then (call $proc_exit (i32.const 1)) (unreachable)))
        (local.set $n (i32.load (global.get $count)))
        (local.set $ptr (i32.add (local.get $ptr) (local.get $n)))
        (local.set $len (i32.sub (local.get $len) (local.get $n)))
        (br $again))))

  (func (export "_start")
    (local $n i32)
    (block $eof
      (loop $chunk
        (i32.store (global.get $iov) (global.get $buf))
        (i32.store (i32.add (global.get $iov) (i32.const 4)) (global.get $buf_cap))
        ;; A read error is a failed task: exit 1 rather than emit partial output silently.
        (if (i32.ne
              (call $fd_read (i32.const 0) (global.get $iov) (i32.const 1) (global.get $count))
              (i32.const 0))
          (then (call $proc_exit (i32.const 1)) (unreachable)))
        (local.set $n (i32.load (global.get $count)))
        (br_if $eof (i32.eqz (local.get $n)))
        (call $upcase (global.get $buf) (local.get $n))
        (call $write_all (global.get $buf) (local.get $n))
        (br $chunk)))
    ;; Returning from _start is exit status 0; proc_exit makes it explicit.
    (call $proc_exit (i32.const 0))))
