-- open_review: queue a task for a human on its own (record_step does it in the step's own
-- call with review=1; this is for a caller that decides later).
--
-- KEYS
--   task     the task hash
--   board    the task's blackboard
--   trace    the task's trace stream
--   reviews  the review queue
--   audit    the audit stream
-- ARGV
--   task_id       the task
--   score         when it started waiting (seconds since the epoch)
--   review_ttl    seconds its state is kept while it waits
--   now           ISO time
--   audit_maxlen  audit events kept; '0' writes none
--   audit_minid   oldest audit stream id kept; '' keeps any age
--
-- Returns 1 when opened, 0 when the task's status is not needs_review.
--@include review

local cfg = {stream = KEY.audit, maxlen = ARG.audit_maxlen, minid = ARG.audit_minid}
local k = {task = KEY.task, board = KEY.board, trace = KEY.trace, reviews = KEY.reviews}
if open_review(k, ARG.task_id, ARG.score, ARG.review_ttl, ARG.now, cfg) then return 1 end
return 0
