-- enqueue: adds one task to a queue (enqueue_bulk.lua adds many that share their options).
--
-- KEYS[1] seq        P:{Q}:seq        (string counter)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] delayed    P:{Q}:delayed    (zset)
-- KEYS[4] meta       P:{Q}:meta       (hash: policy settings)
-- KEYS[5] stats      P:{Q}:stats      (hash: counters)
-- KEYS[6] modrefs    P:{Q}:modrefs    (hash: module -> unfinished tasks)
-- KEYS[7] signal     P:{Q}:signal     (list: worker wake-ups)
-- KEYS[8] estimates  P:{Q}:estimates  (hash: module -> mean run time µs)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] due_at     Unix ms when the task becomes ready (0: at once)
-- ARGV[4] delay_ms   or this long from now, whichever is later (0: none)
-- ARGV[5] module     sha256 of the module (hex)
-- ARGV[6] priority   integer
-- ARGV[7] unique     unique key, or '' for none
-- ARGV[8] unique_ms  how long the unique key may be held at most (ms); 0 = until the task ends
-- ARGV[9] after      parent seqs in this queue, comma-separated ('' for none): the task is
--                    blocked until every one of them has succeeded
-- ARGV[10] on_parent_failure  block | cancel: what a dead parent does to the task
-- ARGV[11] expires_at  Unix ms after which the task, if still waiting, expires (0: see expires_in)
-- ARGV[12] expires_in  or this long from now (ms; 0 with expires_at 0: never)
-- ARGV[13..]         further task fields as name, value pairs (input, max_attempts, timeout_ms, ...)
-- Returns {seq, is_new}: is_new is 0 when a task holding the unique key exists (its seq returned);
-- or the error `UNKNOWNPARENT <seq>`, with nothing written.
local K = {seq = KEYS[1], pending = KEYS[2], delayed = KEYS[3], meta = KEYS[4], stats = KEYS[5], modrefs = KEYS[6],
  signal = KEYS[7], estimates = KEYS[8]}
-- A task whose parent already ended is finished at once, in the queue's finished sets.
K.succeeded, K.dead, K.cancelled = BASE .. 'succeeded', BASE .. 'dead', BASE .. 'cancelled'
local extra = {}
for i = 13, #ARGV do extra[#extra + 1] = ARGV[i] end
local deps = nil
if ARGV[9] ~= '' then deps = {after = ARGV[9], policy = ARGV[10]} end
local seq, is_new = add_task(K, due_time(ARGV[3], ARGV[4]), ARGV[5], tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), extra, deps, nil,
  expiry_time(ARGV[11], ARGV[12]))
if type(seq) == 'table' then return seq end
return {seq, is_new}
