-- complete: records the outcome of a batch of task attempts, each only if the caller still holds
-- the task's lease (fencing: a stale worker's report is refused, so a result is written once).
-- Work shared by the batch (index sets, counters, module references, learned run times,
-- retention) is done once per batch, not once per task.
--
-- KEYS[1] active     P:{Q}:active     (zset)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] delayed    P:{Q}:delayed    (zset)
-- KEYS[4] succeeded  P:{Q}:succeeded  (zset: finish ms)
-- KEYS[5] dead       P:{Q}:dead       (zset: finish ms)
-- KEYS[6] cancelled  P:{Q}:cancelled  (zset: finish ms)
-- KEYS[7] stats      P:{Q}:stats      (hash: counters, and the run-time histogram `run_*`)
-- KEYS[8] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[9] estimates  P:{Q}:estimates  (hash: module -> mean run time µs)
-- KEYS[10] meta      P:{Q}:meta       (hash)
-- KEYS[11] signal    P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] retention  the caller's default retention (see lib.lua `retention`)
-- ARGV[4] worker     the worker's id (recorded with each error)
-- ARGV[5..]          records, each: seq, token, action, delay_ms, error_kind, error_message, nfields,
--                    name1, value1, ..., nchildren, then per child: seq, module, priority,
--                    delay_ms, nfields, name1, value1, ...
--   action  succeeded | retry | dead | cancelled | release
--   delay   for retry: ms from now until the task is due again (otherwise ignored)
--   error   for retry/dead/cancelled: this attempt's error kind and message ('' for none)
--   fields  result fields written to the task hash (output, log, exit_code, error, duration_us, ...)
--   children  tasks the attempt spawned (host API), with the numbers reserved for them; committed
--           (see lib.lua `commit_children`) only when the record is a `succeeded` that applies
-- A `retry` or `release` of a task whose cancel was requested finishes it as `cancelled`.
-- A task with an expiry that goes back to waiting (`retry`, `release`) is in the expiring zset
-- again. A batch that takes tasks off `active` in a queue with a concurrency limit wakes an idle
-- worker when tasks wait: a run slot of the queue is free; so does a group that was parked at its
-- concurrency limit and rejoins the rotation (lib.lua `group_released`).
-- Returns one integer per record: 1 applied, 0 refused (lease lost, task gone or not a hash, or an
-- unknown action).
local K = {active = KEYS[1], pending = KEYS[2], delayed = KEYS[3], succeeded = KEYS[4], dead = KEYS[5],
  cancelled = KEYS[6], stats = KEYS[7], modrefs = KEYS[8], estimates = KEYS[9], meta = KEYS[10], signal = KEYS[11]}
local worker = ARGV[4]
local b = new_batch(K, ARGV[3])
local results, off_active, learned = {}, {}, {}
local pol = nil
local finishing = {succeeded = true, dead = true, cancelled = true}

local i = 5
while i <= #ARGV do
  local seq, token, action, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]) or 0
  local err_kind, err_msg = ARGV[i + 4], ARGV[i + 5]
  local nfields = tonumber(ARGV[i + 6])
  local first_field = i + 7
  i = first_field + 2 * nfields
  local kids = {}
  local nkids = tonumber(ARGV[i]) or 0
  i = i + 1
  for _ = 1, nkids do
    local nf = tonumber(ARGV[i + 4])
    local kf = {}
    for j = i + 5, i + 4 + 2 * nf do kf[#kf + 1] = ARGV[j] end
    kids[#kids + 1] = {seq = ARGV[i], module = ARGV[i + 1], prio = tonumber(ARGV[i + 2]) or 0, delay = tonumber(ARGV[i + 3]) or 0, fields = kf}
    i = i + 5 + 2 * nf
  end

  local tkey = task_key(seq)
  -- pcall: a task key overwritten with another type is refused (and dropped from `active`)
  -- instead of failing the script half-way through the batch.
  local cur = redis.pcall('HMGET', tkey, 'state', 'lease', 'module', 'unique_key', 'waiters', 'error_kind', 'cancel', 'attempts', 'deps', 'after', 'flow',
    'progress', 'expires', 'group')
  local valid = type(cur) == 'table' and not cur.err
  if not valid then off_active[#off_active + 1] = seq end
  -- A cancel requested while the task ran wins over a retry or a hand-back.
  if valid and cur[7] and (action == 'retry' or action == 'release') then action = 'cancelled' end
  local known = finishing[action] or action == 'retry' or action == 'release'
  if not valid or not known or cur[1] ~= 'active' or cur[2] ~= token then
    results[#results + 1] = 0
  else
    results[#results + 1] = 1
    off_active[#off_active + 1] = seq
    if cur[11] then hincr(BASE .. 'flow:' .. cur[11], 'active', -1) end
    if cur[14] and group_released(cur[14]) then b.wake = true end
    -- The attempt's progress report ends with it.
    if cur[12] then redis.call('HDEL', tkey, 'progress', 'progress_msg') end
    local module = cur[3]
    local fields = {}
    for j = first_field, first_field + 2 * nfields - 1 do fields[#fields + 1] = ARGV[j] end
    if err_kind ~= '' then append_error(tkey, cur[8], err_kind, err_msg, worker) end

    -- The attempt's run time, for the run-time histogram of `/metrics`.
    for j = first_field, first_field + 2 * nfields - 1, 2 do
      if ARGV[j] == 'duration_us' then observe(b, 'run', tonumber(ARGV[j + 1])) end
    end
    if finishing[action] then
      if action == 'succeeded' then
        -- Errors of earlier attempts stay in `err:<n>`; the task's own error fields are cleared.
        if cur[6] then redis.call('HDEL', tkey, 'error', 'error_kind') end
        -- Learn the module's mean run time (exponentially weighted) for the wsjf policy.
        for j = first_field, first_field + 2 * nfields - 1, 2 do
          if ARGV[j] == 'duration_us' and module then
            local d = tonumber(ARGV[j + 1])
            local old = learned[module]
            if old == nil then old = tonumber(redis.call('HGET', K.estimates, module)) or false end
            if d then learned[module] = old and math.floor(old * 0.8 + d * 0.2) or d end
          end
        end
      elseif action == 'cancelled' then
        fields[#fields + 1] = 'cancel_reason'
        fields[#fields + 1] = cancel_reason(cur[7])
      end
      local c = {module = module, unique_key = cur[4], waiters = cur[5], deps = cur[9], after = cur[10], flow = cur[11], group = cur[14]}
      if action == 'succeeded' and #kids > 0 then commit_children(K, seq, tkey, c, kids) end
      finish(b, seq, tkey, action, fields, c)
    elseif action == 'retry' then
      local due = NOW + delay
      fields[#fields + 1] = 'state'; fields[#fields + 1] = 'delayed'
      fields[#fields + 1] = 'due'; fields[#fields + 1] = string.format('%d', due)
      redis.call('HSET', tkey, unpack(fields))
      redis.call('ZADD', K.delayed, due, seq)
      if cur[13] then redis.call('ZADD', EXPIRING_KEY, tonumber(cur[13]) or 0, seq) end
      count(b, 'retried', 1)
      b.wake = true
    else
      -- release: handed back unfinished (worker shutdown): not an attempt, back at its old place.
      hincr(tkey, 'attempts', -1)
      pol = pol or queue_policy(K.meta)
      back_to_pending(pol, seq, true)
      b.wake = true
    end
  end
end

if #off_active > 0 then
  redis.call('ZREM', K.active, unpack(off_active))
  if redis.call('HGET', K.meta, 'limit_concurrency') and any_pending() then b.wake = true end
end
for module, us in pairs(learned) do
  if us then redis.call('HSET', K.estimates, module, us) end
end
flush(b)
return results
