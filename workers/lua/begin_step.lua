-- begin_step: mark a step running, or say why it must not run; then hold its first model
-- call's worst case against the task's budget, in the same round trip.
--
-- KEYS
--   task     the task hash (status, timestamps, totals, queued:/running: counters)
--   board    the blackboard: input message id -> step record
--   audit    the audit stream
--   seen     input fingerprint -> the first message id that brought it (loop detection)
--   budget   the task's budget hash (see lib/budget.lua)
-- ARGV
--   now                 ISO time of the call
--   ttl                 seconds the task's state lives after this write
--   message_id          the step's input message id
--   agent               the agent taking the step
--   task_id             the task
--   fingerprint         agent + request + retry count; '' skips the loop check
--   audit_maxlen        audit events kept; '0' writes none
--   audit_minid         oldest audit stream id kept; '' keeps any age
--   hold_field          budget field of the first call ('' holds nothing), then its
--   hold_tokens         worst case in tokens
--   hold_micro_usd      and in micro-dollars,
--   default_tokens      the limits of a task that set none,
--   default_micro_usd
--   budget_ttl          and how long the budget hash lives
--
-- Returns nil to go ahead, or why not:
--   {'handled', record}   this input was handled already (a redelivery): its record stands
--   {'stopped', status}   the task's budget ran out before this step started
--   {'loop', first_id}    the same input reached the same agent under another message
--   {'refused', what, used, want, limit}   the step runs, but its first call does not fit
-- Every answer but 'handled' is followed by the step's record, so each counts the step as
-- running (record_step counts it back) and takes it off the agent's queued counter, once per
-- input message (the task hash's `begun:`/`dequeued:<message_id>` fields mark it until the
-- record).
--@include audit
--@include budget

local cfg = {stream = KEY.audit, maxlen = ARG.audit_maxlen, minid = ARG.audit_minid}
local queued, running = 'queued:' .. ARG.agent, 'running:' .. ARG.agent

local function dequeue()
  -- Once per input message: a redelivery of a step that began and never recorded (its worker
  -- died) is counted already, so the counters stay exact under kill -9. A parked step gave
  -- its `begun:` mark back (it no longer runs) but keeps `dequeued:` (it left the queue once).
  if redis.call('HSETNX', KEY.task, 'dequeued:' .. ARG.message_id, '1') == 1
     and tonumber(redis.call('HGET', KEY.task, queued) or '0') > 0 then
    redis.call('HINCRBY', KEY.task, queued, -1)
  end
  if redis.call('HSETNX', KEY.task, 'begun:' .. ARG.message_id, '1') == 1 then
    redis.call('HINCRBY', KEY.task, running, 1)
  end
  redis.call('EXPIRE', KEY.task, ARG.ttl)
end

local done = redis.call('HGET', KEY.board, ARG.message_id)
if done then return {'handled', done} end

local status = redis.call('HGET', KEY.task, 'status')
if status == TaskStatus.BUDGET_EXCEEDED then
  dequeue()
  return {'stopped', status}
end

if ARG.fingerprint ~= '' then
  local first = redis.call('HGET', KEY.seen, ARG.fingerprint)
  if first and first ~= ARG.message_id then
    dequeue()
    return {'loop', first}
  end
  redis.call('HSET', KEY.seen, ARG.fingerprint, ARG.message_id)
  redis.call('EXPIRE', KEY.seen, ARG.ttl)
end

if status ~= TaskStatus.DONE and status ~= TaskStatus.FAILED
   and status ~= TaskStatus.NEEDS_REVIEW then
  redis.call('HSET', KEY.task, 'status', TaskStatus.RUNNING, 'updated_at', ARG.now)
  redis.call('HSETNX', KEY.task, 'started_at', ARG.now)
end
dequeue()
audit(cfg, KEY.task, ARG.task_id, 'started',
      {'agent', ARG.agent, 'at', ARG.now, 'message_id', ARG.message_id})

if ARG.hold_field ~= '' then
  local refused = reserve_budget(KEY.task, KEY.budget, ARG.hold_field, tonumber(ARG.hold_tokens),
                                 tonumber(ARG.hold_micro_usd), ARG.default_tokens,
                                 ARG.default_micro_usd, ARG.budget_ttl)
  if refused then return {'refused', unpack(refused)} end
end
return nil
