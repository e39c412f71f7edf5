-- complete: records the outcome of a batch of task attempts, each only if the caller still holds
-- the task's lease (fencing: a stale worker's report is refused, so a result is written once).
-- Work shared by the batch (index sets, counters, module references, learned run times) is done
-- once per batch, not once per task.
--
-- KEYS[1] active     P:{Q}:active     (zset)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] delayed    P:{Q}:delayed    (zset)
-- KEYS[4] succeeded  P:{Q}:succeeded  (zset: finish ms)
-- KEYS[5] dead       P:{Q}:dead       (zset: finish ms)
-- KEYS[6] cancelled  P:{Q}:cancelled  (zset: finish ms)
-- KEYS[7] stats      P:{Q}:stats      (hash)
-- KEYS[8] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[9] estimates  P:{Q}:estimates  (hash: module -> mean run time µs)
-- KEYS[10] meta      P:{Q}:meta       (hash)
-- KEYS[11] signal    P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] retention  ms that finished tasks are kept (0 = forever)
-- ARGV[4..]          records, each: seq, token, action, due, error, nfields, name1, value1, ...
--   action  succeeded | retry | dead | cancelled | release
--   due     for retry: Unix ms when the task is due again (otherwise ignored)
--   error   for retry/dead/cancelled: this attempt's error as a JSON object, or ''
--   fields  result fields written to the task hash (output, log, exit_code, error, duration_us, ...)
-- A `retry` or `release` of a task whose cancel was requested finishes it as `cancelled`.
-- Returns one integer per record: 1 applied, 0 refused (lease lost, task gone or not a hash, or an
-- unknown action).
local base, now, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local finished_set = {succeeded = KEYS[4], dead = KEYS[5], cancelled = KEYS[6]}
local results, off_active = {}, {}
local finished = {succeeded = {}, dead = {}, cancelled = {}}
local counts, unrefs, learned = {}, {}, {}
local wake, pol = false, nil

local function count(name, by) counts[name] = (counts[name] or 0) + by end

local i = 4
while i <= #ARGV do
  local seq, token, action, due, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
  local nfields = tonumber(ARGV[i + 5])
  local first_field = i + 6
  i = first_field + 2 * nfields

  local task_key = base .. 'task:' .. seq
  -- pcall: a task key overwritten with another type is refused (and dropped from `active`)
  -- instead of failing the script half-way through the batch.
  local cur = redis.pcall('HMGET', task_key, 'state', 'lease', 'module', 'unique_key', 'waiters', 'error_kind', 'cancel')
  local valid = type(cur) == 'table' and not cur.err
  if not valid then off_active[#off_active + 1] = seq end
  -- A cancel requested while the task ran wins over a retry or a hand-back.
  if valid and cur[7] == '1' and (action == 'retry' or action == 'release') then action = 'cancelled' end
  local known = finished_set[action] ~= nil or action == 'retry' or action == 'release'
  if not valid or not known or cur[1] ~= 'active' or cur[2] ~= token then
    results[#results + 1] = 0
  else
    results[#results + 1] = 1
    off_active[#off_active + 1] = seq
    local module = cur[3]
    local hset = {}
    for j = first_field, first_field + 2 * nfields - 1 do hset[#hset + 1] = ARGV[j] end
    if err ~= '' then append_error(task_key, err) end

    if action == 'succeeded' or action == 'dead' or action == 'cancelled' then
      hset[#hset + 1] = 'state'; hset[#hset + 1] = action
      hset[#hset + 1] = 'finished'; hset[#hset + 1] = now
      redis.call('HSET', task_key, unpack(hset))
      if action == 'succeeded' then
        -- Errors of earlier attempts stay in `errors`; the task's own error fields are cleared.
        if cur[6] then redis.call('HDEL', task_key, 'error', 'error_kind') end
        -- Learn the module's mean run time (exponentially weighted) for the wsjf policy.
        for j = first_field, first_field + 2 * nfields - 1, 2 do
          if ARGV[j] == 'duration_us' and module then
            local d = tonumber(ARGV[j + 1])
            local old = learned[module]
            if old == nil then old = tonumber(redis.call('HGET', KEYS[9], module)) or false end
            if d then learned[module] = old and math.floor(old * 0.8 + d * 0.2) or d end
          end
        end
      end
      local set = finished[action]
      set[#set + 1] = now
      set[#set + 1] = seq
      if retention > 0 then redis.call('PEXPIRE', task_key, retention) end
      if module then unrefs[module] = (unrefs[module] or 0) + 1 end
      if cur[4] then release_unique(base, seq, task_key) end
      if cur[5] then notify_waiters(base, seq, task_key) end
      count(action, 1)
    elseif action == 'retry' then
      hset[#hset + 1] = 'state'; hset[#hset + 1] = 'delayed'
      redis.call('HSET', task_key, unpack(hset))
      redis.call('ZADD', KEYS[3], due, seq)
      count('retried', 1)
      wake = true
    elseif action == 'release' then
      -- Handed back unfinished (worker shutdown): not an attempt, back at its old place.
      hincr(task_key, 'attempts', -1)
      redis.call('HSET', task_key, 'state', 'pending')
      redis.call('HDEL', task_key, 'worker', 'started', 'claimed', 'running')
      pol = pol or queue_policy(KEYS[10])
      local prio = tonumber(redis.call('HGET', task_key, 'priority')) or 0
      push_pending(base, pol, KEYS[2], KEYS[9], task_key, seq, prio, true)
      wake = true
    end
  end
end

if #off_active > 0 then redis.call('ZREM', KEYS[1], unpack(off_active)) end
for action, set in pairs(finished) do
  if #set > 0 then redis.call('ZADD', finished_set[action], unpack(set)) end
end
for name, by in pairs(counts) do hincr(KEYS[7], name, by) end
for module, n in pairs(unrefs) do
  if hincr(KEYS[8], module, -n) <= 0 then redis.call('HDEL', KEYS[8], module) end
end
for module, us in pairs(learned) do
  if us then redis.call('HSET', KEYS[9], module, us) end
end
if wake then signal(KEYS[11]) end

-- Forget index entries whose task hashes have expired.
if retention > 0 then
  local cutoff = now - retention
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', cutoff)
end
return results
