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
-- ARGV[2] now        Unix ms
-- ARGV[3] due        Unix ms when the task becomes ready; 0 or <= now means at once
-- ARGV[4] module     sha256 of the module (hex)
-- ARGV[5] priority   integer in [-1e6, 1e6]
-- ARGV[6] unique     unique key, or '' for none
-- ARGV[7] unique_ms  how long the unique key may be held at most (ms); 0 = until the task ends
-- ARGV[8..]          further task fields as name, value pairs (input, max_attempts, timeout_ms, ...)
-- Returns {seq, is_new}: is_new is 0 when a task holding the unique key exists (its seq returned).
local extra = {}
for i = 8, #ARGV do extra[#extra + 1] = ARGV[i] end
local seq, is_new = add_task(KEYS, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), ARGV[6],
  tonumber(ARGV[7]), extra)
return {seq, is_new}
