-- record_step: store a step once, keyed by its input message id, with everything that must
-- happen with it: totals, trace, metrics, audit, the budget settlement, and the review or the
-- dead letter the step ends in. One atomic call, so a crash never leaves a task in
-- needs_review missing from the review queue, or an error without its dead letter.
--
-- KEYS
--   board         the blackboard: input message id -> step record
--   task          the task hash
--   trace         the task's trace stream (one entry per stored step)
--   audit         the audit stream
--   metrics       the fleet's counters (see lib/step_metrics.lua)
--   budget        the task's budget hash (see lib/budget.lua)
--   reviews       the review queue
--   dead_letters  the dead-letter stream
-- ARGV
--   message_id        the step's input message id
--   record            the step record, JSON
--   ttl               seconds the task's state lives after this write
--   now               ISO time of the call (the review's and the dead letter's time)
--   final_status      the task's status after this step ('' leaves it); never replaces
--                     budget_exceeded
--   finished_at       when the step finished
--   final_message_id  the step's output message id
--   task_id           the task
--   agent             the agent that took the step
--   model             the model of its last call ('' when none)
--   step_status       ok, error or skipped
--   error_code        the stable error code of an error step ('' otherwise)
--   attempts          model calls answered
--   retries           transport retries
--   latency_seconds   the step's wall time
--   cost_micro_usd    what its calls cost, and their tokens:
--   input_tokens
--   output_tokens
--   cache_creation_input_tokens
--   cache_read_input_tokens
--   audit_maxlen      audit events kept; '0' writes none
--   audit_minid       oldest audit stream id kept; '' keeps any age
--   settle_field      budget field of the step's last call ('' settles nothing), then
--   settle_tokens     what it cost in tokens
--   settle_micro_usd  and micro-dollars,
--   settle_mode       'settle' (it answered) or 'release' (it failed)
--   settle_token      the settlement's own name (sent again, it settles nothing)
--   review            '1' opens a human review (only for a task now in needs_review)
--   review_score      when the review started waiting (seconds since the epoch)
--   review_ttl        seconds the state of a task in review is kept
--   dead_letter       JSON of the step's dead letter (see lib/dead_letter.lua), '' for none
--   dead_letter_maxlen  dead letters kept
--
-- Returns nil when this call stored the record. The same call sent again (its reply was lost)
-- changes nothing and gets its own record back. A second delivery of the same message (two
-- deliveries raced and both called the model) gets the record stored first back; its calls
-- were billed all the same, so their cost and tokens still count on the task (not its steps,
-- not the board), `duplicates` says it happened, and its review or dead letter is dropped.
--@include audit
--@include budget
--@include dead_letter
--@include review
--@include step_metrics

local existing = redis.call('HGET', KEY.board, ARG.message_id)
if existing == ARG.record then
  -- This very call ran already (a record names its delivery's worker and times, so no other
  -- delivery's is the same): its reply was lost to a Redis restart or failover and the client
  -- sent it again. All it wrote stands; writing it again would settle and count twice.
  return existing
end

local cfg = {stream = KEY.audit, maxlen = ARG.audit_maxlen, minid = ARG.audit_minid}
local usage = {calls = ARG.attempts, input_tokens = ARG.input_tokens,
               output_tokens = ARG.output_tokens,
               cache_creation_input_tokens = ARG.cache_creation_input_tokens,
               cache_read_input_tokens = ARG.cache_read_input_tokens,
               cost_micro_usd = ARG.cost_micro_usd, retries = ARG.retries}
local model = ARG.model

if ARG.settle_field ~= '' then
  settle_budget(KEY.budget, ARG.settle_field, tonumber(ARG.settle_tokens),
                tonumber(ARG.settle_micro_usd), ARG.settle_mode, ARG.ttl, ARG.settle_token)
end
-- Only a step that began counts back (an undecodable message's record never began).
local running = 'running:' .. ARG.agent
redis.call('HDEL', KEY.task, 'dequeued:' .. ARG.message_id)  -- a replay stops at 'handled' now
if redis.call('HDEL', KEY.task, 'begun:' .. ARG.message_id) == 1
   and tonumber(redis.call('HGET', KEY.task, running) or '0') > 0 then
  redis.call('HINCRBY', KEY.task, running, -1)
end

local function add_spend()
  redis.call('HINCRBY', KEY.task, 'cost_micro_usd', ARG.cost_micro_usd)
  redis.call('HINCRBY', KEY.task, 'input_tokens', ARG.input_tokens)
  redis.call('HINCRBY', KEY.task, 'output_tokens', ARG.output_tokens)
  redis.call('HINCRBY', KEY.task, 'cache_creation_input_tokens', ARG.cache_creation_input_tokens)
  redis.call('HINCRBY', KEY.task, 'cache_read_input_tokens', ARG.cache_read_input_tokens)
  redis.call('HINCRBY', KEY.task, 'retries', ARG.retries)
  count_usage(KEY.metrics, ARG.agent, model, usage)
end

if existing then
  add_spend()
  redis.call('HINCRBY', KEY.task, 'duplicates', 1)
  redis.call('HINCRBY', KEY.task, 'duplicate_cost_micro_usd', ARG.cost_micro_usd)
  redis.call('HINCRBY', KEY.metrics, 'duplicates|' .. ARG.agent .. '|' .. model, 1)
  audit(cfg, KEY.task, ARG.task_id, 'duplicate_step',
        {'agent', ARG.agent, 'at', ARG.finished_at, 'record', ARG.record})
  return existing
end

redis.call('HSET', KEY.board, ARG.message_id, ARG.record)
add_spend()
redis.call('HINCRBY', KEY.task, 'steps', 1)
if ARG.final_status ~= ''
   and redis.call('HGET', KEY.task, 'status') ~= TaskStatus.BUDGET_EXCEEDED then
  redis.call('HSET', KEY.task, 'status', ARG.final_status, 'finished_at', ARG.finished_at,
             'final_message_id', ARG.final_message_id, 'updated_at', ARG.finished_at)
end
redis.call('XADD', KEY.trace, '*', 'record', ARG.record)
for _, key in ipairs({KEY.board, KEY.task, KEY.trace}) do redis.call('EXPIRE', key, ARG.ttl) end
audit(cfg, KEY.task, ARG.task_id, 'step',
      {'agent', ARG.agent, 'at', ARG.finished_at, 'record', ARG.record})
count_step(KEY.metrics, ARG.agent, model, ARG.step_status, ARG.error_code, ARG.latency_seconds)

if ARG.dead_letter ~= '' then
  dead_letter(KEY.dead_letters, ARG.dead_letter_maxlen, ARG.dead_letter, ARG.now, KEY.task, cfg)
end
if ARG.review == '1' then
  local k = {task = KEY.task, board = KEY.board, trace = KEY.trace, reviews = KEY.reviews}
  open_review(k, ARG.task_id, ARG.review_score, ARG.review_ttl, ARG.now, cfg)
end
return nil
