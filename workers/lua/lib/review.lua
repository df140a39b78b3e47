-- review: queue a task for a human decision and keep its state until someone decides.
--
-- open_review(k, task_id, score, review_ttl, at, cfg)
--   k           {task, board, trace, reviews}: the task's keys and the review queue
--   score       when it started waiting (seconds since the epoch), the queue's order
--   review_ttl  seconds the task's state is kept while it waits
--   cfg         the audit stream (see lib/audit.lua)
-- Returns true when the review was opened: only a task whose status is needs_review waits
-- (a task its budget stopped meanwhile would never leave the queue).
--@include audit

local function open_review(k, task_id, score, review_ttl, at, cfg)
  if redis.call('HGET', k.task, 'status') ~= TaskStatus.NEEDS_REVIEW then return false end
  redis.call('ZADD', k.reviews, score, task_id)
  for _, key in ipairs({k.task, k.board, k.trace}) do redis.call('EXPIRE', key, review_ttl) end
  audit(cfg, k.task, task_id, 'review_opened', {'at', at, 'status', TaskStatus.NEEDS_REVIEW})
  return true
end
