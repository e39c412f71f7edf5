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

/* Ends the task as a permanent failure (never retried) with a message of len bytes. Does not
 * return. Exiting with status 2 means the same. */
WASMQ_IMPORT("fail") _Noreturn void wasmq_fail(const char *message, size_t len);

/* Exit status of a permanent failure (bad input, say): never retried. */
#define WASMQ_EXIT_PERMANENT 2

#endif
