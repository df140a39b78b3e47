-- journal_resume: read a step's journal at the start of its tool loop, releasing the budget
-- holds a dead delivery of the same step left behind, in one atomic call.
--
-- KEYS
--   journal  the step's journal hash (see keys.journal)
--   budget   the task's budget hash (see lib/budget.lua)
-- ARGV
--   prefix   'r:<message_id>:': the hold fields of this step's calls
--   keep     the hold this delivery made with its begin ('r:<message_id>:1')
--   ttl      seconds the budget hash lives
--
-- A delivery numbers its calls from 1, and begin_step already replaced hold 1; any other hold
-- of the step is a call that a dead delivery reserved and never settled. Returns the journal
-- as a flat field/value list (empty for a step that never ran a turn).
--@include budget

for _, name in ipairs(redis.call('HKEYS', KEY.budget)) do
  if name ~= ARG.keep and string.sub(name, 1, #ARG.prefix) == ARG.prefix then
    settle_budget(KEY.budget, string.sub(name, 3), 0, 0, 'release', ARG.ttl, '')
  end
end
return redis.call('HGETALL', KEY.journal)
