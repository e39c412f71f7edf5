;; Reads a decimal number N from stdin and counts down from N (about N nanoseconds of work):
;; a task whose run time the benchmark chooses.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i64) (local $i i32) (local $len i32) (local $b i32)
    ;; read up to 64 bytes of input at 1024
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 64))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
    (local.set $len (i32.load (i32.const 16)))
    (block $done
      (loop $digits
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $b (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (br_if $done (i32.or (i32.lt_u (local.get $b) (i32.const 48)) (i32.gt_u (local.get $b) (i32.const 57))))
        (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10)) (i64.extend_i32_u (i32.sub (local.get $b) (i32.const 48)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digits)))
    (loop $spin
      (if (i64.gt_s (local.get $n) (i64.const 0))
        (then
          (local.set $n (i64.sub (local.get $n) (i64.const 1)))
          (br $spin))))))
