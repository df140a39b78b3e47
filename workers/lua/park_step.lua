-- park_step: park a step whose tool call needs a human's approval, and open its review, in one
-- atomic call: a review is never listed without what it takes to resume the step.
--
-- KEYS
--   journal   the step's journal hash (see keys.journal)
--   task      the task hash
--   board     the task's blackboard
--   trace     the task's trace stream
--   reviews   the tool-review queue (keys.TOOL_REVIEWS)
--   audit     the audit stream
-- ARGV
--   park          the pending approval, JSON (workers/approvals.py): the calls, the turn and
--                 the signature that resumes the step
--   review_id     'task_id/message_id'
--   task_id       the task
--   agent         the agent whose step parks
--   score         when it started waiting (seconds since the epoch)
--   review_ttl    seconds the task's state is kept while it waits
--   now           ISO time
--   audit_maxlen  audit events kept; '0' writes none
--   audit_minid   oldest audit stream id kept; '' keeps any age
--
-- The step stops counting as running (its worker slot is free) and counts as parked until a
-- decision resumes it. Returns 1, or 0 when the step was parked already (a redelivery).
--@include audit

if redis.call('HEXISTS', KEY.journal, 'park') == 1 then return 0 end
redis.call('HSET', KEY.journal, 'park', ARG.park)
redis.call('ZADD', KEY.reviews, ARG.score, ARG.review_id)
-- It no longer counts as begun either, so the resumed delivery counts as running again.
local running = 'running:' .. ARG.agent
local message_id = string.match(ARG.review_id, '/(.*)$') or ''
if redis.call('HDEL', KEY.task, 'begun:' .. message_id) == 1
   and tonumber(redis.call('HGET', KEY.task, running) or '0') > 0 then
  redis.call('HINCRBY', KEY.task, running, -1)
end
redis.call('HINCRBY', KEY.task, 'parked', 1)
redis.call('HSET', KEY.task, 'updated_at', ARG.now)
for _, key in ipairs({KEY.journal, KEY.task, KEY.board, KEY.trace}) do
  redis.call('EXPIRE', key, ARG.review_ttl)
end
local cfg = {stream = KEY.audit, maxlen = ARG.audit_maxlen, minid = ARG.audit_minid}
audit(cfg, KEY.task, ARG.task_id, 'tool_review_opened',
      {'agent', ARG.agent, 'at', ARG.now, 'detail', ARG.park})
return 1
