-- decide_tool: record a human's decision on a parked step's tool calls and end its wait.
--
-- KEYS
--   journal   the step's journal hash (see keys.journal)
--   task      the task hash
--   reviews   the tool-review queue (keys.TOOL_REVIEWS)
--   audit     the audit stream
-- ARGV
--   review_id     'task_id/message_id'
--   task_id       the task
--   decision      the decision, JSON {approved, note, reviewer, at}: written for every
--                 call the step waits on, as 'decision:<tool_use_id>'
--   ttl           seconds the task's state lives from now on
--   now           ISO time of the decision
--   audit_maxlen  audit events kept; '0' writes none
--   audit_minid   oldest audit stream id kept; '' keeps any age
--
-- Returns the park entry (JSON; it carries the signature that resumes the step), or nil when
-- the step is not waiting (decided already, or unknown). Only one decision ever wins.
--@include audit

local park = redis.call('HGET', KEY.journal, 'park')
if not park then return nil end
for _, call in ipairs(cjson.decode(park).calls) do
  redis.call('HSET', KEY.journal, 'decision:' .. call.id, ARG.decision)
end
redis.call('HDEL', KEY.journal, 'park')
redis.call('ZREM', KEY.reviews, ARG.review_id)
if tonumber(redis.call('HGET', KEY.task, 'parked') or '0') > 0 then
  redis.call('HINCRBY', KEY.task, 'parked', -1)
end
redis.call('HSET', KEY.task, 'updated_at', ARG.now)
redis.call('EXPIRE', KEY.journal, ARG.ttl)
local cfg = {stream = KEY.audit, maxlen = ARG.audit_maxlen, minid = ARG.audit_minid}
audit(cfg, KEY.task, ARG.task_id, 'tool_review_decided',
      {'at', ARG.now, 'detail', ARG.decision})
return park
