-- purge: deletes finished tasks of one state that finished before a cutoff.
--
-- KEYS[1] set        P:{Q}:succeeded | P:{Q}:dead | P:{Q}:cancelled (zset: finish ms)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] cutoff     Unix ms; tasks finished at or before it are deleted
-- ARGV[3] limit      most tasks per call (the caller repeats until 0 is returned)
-- Returns the number of tasks deleted.
local base, cutoff, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seqs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, limit)
for _, seq in ipairs(seqs) do
  redis.call('DEL', base .. 'task:' .. seq)
  redis.call('ZREM', KEYS[1], seq)
end
return #seqs
