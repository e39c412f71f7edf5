-- repolicy: after a queue's policy changed, moves every pending task into the structure of the
-- new policy (see lib.lua), in the new policy's order. O(n log n) in the pending tasks: changing
-- the policy of a queue with a million pending tasks blocks Redis for about a second.
--
-- KEYS[1] pending    P:{Q}:pending    (zset, the wsjf structure)
-- KEYS[2] meta       P:{Q}:meta       (hash: the new policy)
-- KEYS[3] estimates  P:{Q}:estimates  (hash)
-- ARGV[1] base       P:{Q}:
-- Returns the number of tasks moved.
local base = ARGV[1]
local pol = queue_policy(KEYS[2])
local seqs = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
local levels_key = base .. 'levels'
for _, level in ipairs(redis.call('ZRANGE', levels_key, 0, -1)) do
  local list = base .. 'p:' .. level
  for _, s in ipairs(redis.call('LRANGE', list, 0, -1)) do seqs[#seqs + 1] = s end
  redis.call('DEL', list)
end
redis.call('DEL', levels_key)
local entries = {}
for _, s in ipairs(seqs) do
  local prio = tonumber(redis.call('HGET', base .. 'task:' .. s, 'priority')) or 0
  entries[#entries + 1] = {seq = s, n = tonumber(s), prio = prio}
end
if pol.policy == 'priority' then
  table.sort(entries, function(a, b)
    if a.prio ~= b.prio then return a.prio > b.prio end
    return a.n < b.n
  end)
else
  table.sort(entries, function(a, b) return a.n < b.n end)
end
for _, e in ipairs(entries) do
  push_pending(base, pol, KEYS[1], KEYS[3], base .. 'task:' .. e.seq, e.seq, e.prio, false)
end
return #entries
