-- batch_park: park a batched step's model call until its batch result arrives, in one atomic
-- call: the request joins its model's pending set with what resumes the step, the call before
-- it is settled in the budget and this one's worst case held (see workers/batching.py).
--
-- KEYS
--   step      the step's batch hash (keys.batch_step)
--   task      the task hash
--   board     the task's blackboard
--   trace     the task's trace stream
--   budget    the task's budget hash (see lib/budget.lua)
--   requests  custom_id -> request waiting for its result (keys.BATCH_REQUESTS)
--   pending   the model's custom_ids not yet in a batch (keys.batch_pending)
--   models    models with pending requests (keys.BATCH_MODELS)
-- ARGV
--   attempt            the call's attempt (1, or 2 for the stricter retry)
--   custom_id          the request's custom_id (derived from task, message and attempt)
--   entry              the request, JSON: custom_id, task_id, message_id, attempt, model,
--                      agent, params
--   resume             the Celery signature that resumes the step, JSON ('' for none)
--   model              the request's model
--   agent              the agent whose step parks
--   score              when it parked (seconds since the epoch)
--   ttl                seconds the task's state lives while it waits (a batch may take 24 h)
--   settled_attempt    the attempt whose settlement rides along (0 for none)
--   settle_field       budget field of the earlier attempt ('' settles nothing), then
--   settle_tokens      what it cost in tokens
--   settle_micro_usd   and micro-dollars,
--   settle_mode        'settle' or 'release'
--   settle_token       the settlement's own name (sent again, it settles nothing)
--   hold_field         budget field of this attempt ('' holds nothing: begin_step held it)
--   hold_tokens        its worst case in tokens
--   hold_micro_usd     and in micro-dollars,
--   default_tokens     the limits of a task that set none,
--   default_micro_usd
--   budget_ttl         and how long the budget hash lives
--
-- The settlement is applied on every delivery (a redelivery settles again what begin_step held
-- again). Returns 'parked'; 'already' when this attempt was parked before (a redelivery: the
-- request is not added twice); or {'refused', what, used, want, limit} when this attempt's
-- worst case does not fit (nothing parked: the step goes on to its error). Parked or
-- already, the step stops counting as running; a new park counts it as parked.
--@include budget

if ARG.settle_field ~= '' then
  settle_budget(KEY.budget, ARG.settle_field, tonumber(ARG.settle_tokens),
                tonumber(ARG.settle_micro_usd), ARG.settle_mode, ARG.ttl, ARG.settle_token)
end
if ARG.settled_attempt ~= '0' then
  redis.call('HSET', KEY.step, 'settled:' .. ARG.settled_attempt, '1')
end
redis.call('EXPIRE', KEY.step, ARG.ttl)

local running = 'running:' .. ARG.agent
local function not_running()
  -- No longer begun either: the delivery that resumes it counts as running again.
  local message_id = cjson.decode(ARG.entry).message_id or ''
  if redis.call('HDEL', KEY.task, 'begun:' .. message_id) == 1
     and tonumber(redis.call('HGET', KEY.task, running) or '0') > 0 then
    redis.call('HINCRBY', KEY.task, running, -1)
  end
end

if redis.call('HEXISTS', KEY.step, 'req:' .. ARG.attempt) == 1 then
  not_running()
  return 'already'
end
if ARG.hold_field ~= '' then
  local refused = reserve_budget(KEY.task, KEY.budget, ARG.hold_field, tonumber(ARG.hold_tokens),
                                 tonumber(ARG.hold_micro_usd), ARG.default_tokens,
                                 ARG.default_micro_usd, ARG.budget_ttl)
  if refused then return {'refused', unpack(refused)} end
end
redis.call('HSET', KEY.step, 'req:' .. ARG.attempt, ARG.custom_id)
if ARG.resume ~= '' then redis.call('HSET', KEY.step, 'park', ARG.resume) end
redis.call('HSET', KEY.requests, ARG.custom_id, ARG.entry)
redis.call('ZADD', KEY.pending, ARG.score, ARG.custom_id)
redis.call('SADD', KEY.models, ARG.model)
not_running()
redis.call('HINCRBY', KEY.task, 'parked', 1)
redis.call('HINCRBY', KEY.task, 'batched', 1)
for _, key in ipairs({KEY.step, KEY.task, KEY.board, KEY.trace, KEY.budget}) do
  redis.call('EXPIRE', key, ARG.ttl)
end
return 'parked'
