-- rescore: recomputes the pending scores of some tasks after a queue's policy changed.
--
-- KEYS[1] pending    P:{Q}:pending    (zset)
-- KEYS[2] meta       P:{Q}:meta       (hash: the new policy)
-- KEYS[3] estimates  P:{Q}:estimates  (hash)
-- ARGV[1] base       P:{Q}:
-- ARGV[2..] seqs of pending tasks (ones no longer pending are skipped)
-- Returns the number of tasks rescored.
local base = ARGV[1]
local pol = queue_policy(KEYS[2])
local n = 0
for i = 2, #ARGV do
  local seq = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], seq) then
    redis.call('ZADD', KEYS[1], 'XX', pending_score(pol, KEYS[3], base .. 'task:' .. seq, tonumber(seq)), seq)
    n = n + 1
  end
end
return n
