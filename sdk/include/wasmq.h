/* wasmq.h: the wasmq task host API for core modules (WASI preview 1), in C.
 *
 * The functions are imports of module "wasmq"; docs/host-api.md describes them and their ABI.
 * A task that calls none of them imports nothing from "wasmq" and runs on any WASI host.
 * Build with a wasm32-wasi C compiler, e.g. `zig cc --target=wasm32-wasi task.c -o task.wasm`.
 */
#ifndef WASMQ_H
#define WASMQ_H

#include <stddef.h>
#include <stdint.h>

#define WASMQ_IMPORT(name) __attribute__((import_module("wasmq"), import_name(name)))

/* Reports how far the task is: fraction from 0.0 to 1.0 (clamped), a message of len bytes (256
 * kept). The worker writes the latest report to Redis with its next heartbeat. */
WASMQ_IMPORT("progress") void wasmq_progress(float fraction, const char *message, size_t len);

/* Looks up a setting of the task's queue or a secret it is granted. Returns -1 when there is
 * none; otherwise the value's length n, having written min(n, out_cap) bytes of it to out (call
 * again with a buffer of n bytes when n > out_cap). Keys are at most 256 bytes. */
WASMQ_IMPORT("config") int64_t wasmq_config(const char *key, size_t key_len, char *out, size_t out_cap);

/* Starts a child task: the module named by module (module_len bytes: a name in the module store
 * or a SHA-256) with input (input_len bytes), in this task's queue; options is a JSON object
 * (options_len bytes, 0 for none) with any of "priority", "delay_ms", "timeout_ms",
 * "max_attempts". The child is enqueued only if this attempt succeeds; this task's dependents
 * wait for it too. Returns n >= 0: the child's id (n bytes, e.g. "default:42") was written to out
 * (min(n, out_cap) bytes: 256 always suffice); or -n: the worker refused (past --max-children,
 * inputs over --max-input-size in total, an unknown module, bad options) and min(n, out_cap)
 * bytes of the reason were written to out. */
WASMQ_IMPORT("spawn") int64_t wasmq_spawn(const char *module, size_t module_len, const uint8_t *input, size_t input_len, const char *options,
                                          size_t options_len, char *out, size_t out_cap);

/* Ends the task as a permanent failure (never retried) with a message of len bytes. Does not
 * return. Exiting with status 2 means the same. */
WASMQ_IMPORT("fail") _Noreturn void wasmq_fail(const char *message, size_t len);

/* Exit status of a permanent failure (bad input, say): never retried. */
#define WASMQ_EXIT_PERMANENT 2

#endif
