-- decide_review: record a human's decision on a task waiting for review, and end its wait.
--
-- KEYS
--   task     the task hash
--   reviews  the review queue
--   audit    the audit stream
-- ARGV
--   task_id       the task
--   decision      approved or rejected
--   note          the reviewer's note
--   reviewer      who decided
--   now           ISO time of the decision
--   status        the task's status from now on (done or rejected)
--   audit_maxlen  audit events kept; '0' writes none
--   audit_minid   oldest audit stream id kept; '' keeps any age
--
-- Returns 1, or 0 when the task is not waiting for review (decided already, or unknown).
--@include audit

if redis.call('HGET', KEY.task, 'status') ~= TaskStatus.NEEDS_REVIEW then return 0 end
redis.call('HSET', KEY.task, 'status', ARG.status, 'review_decision', ARG.decision,
           'review_note', ARG.note, 'reviewer', ARG.reviewer, 'reviewed_at', ARG.now,
           'updated_at', ARG.now)
redis.call('ZREM', KEY.reviews, ARG.task_id)
local cfg = {stream = KEY.audit, maxlen = ARG.audit_maxlen, minid = ARG.audit_minid}
audit(cfg, KEY.task, ARG.task_id, 'review_decided',
      {'at', ARG.now, 'status', ARG.status, 'detail',
       cjson.encode({decision = ARG.decision, note = ARG.note, reviewer = ARG.reviewer})})
return 1
