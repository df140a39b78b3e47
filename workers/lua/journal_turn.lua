-- journal_turn: journal one answered model turn of a tool loop and settle its budget hold,
-- in one atomic call: a turn that is journaled is paid for in the budget exactly once, and a
-- crash after it leaves nothing to settle (the redelivery replays the turn, unbilled).
--
-- KEYS
--   journal  the step's journal hash (see keys.journal)
--   budget   the task's budget hash (see lib/budget.lua)
-- ARGV
--   field             'turn:<n>'
--   entry             the turn, JSON (workers/journal.py TurnEntry)
--   ttl               seconds the journal and the budget hash live
--   settle_field      the turn's budget hold, then
--   settle_tokens     what it cost in tokens
--   settle_micro_usd  and micro-dollars,
--   settle_mode       'settle'
--   settle_token      the settlement's own name (sent again, it settles nothing)
--
-- Returns nil when journaled, else the entry a concurrent delivery journaled first (this
-- delivery's call was billed all the same, so its cost is settled either way).
-- The same call sent again (a Redis restart lost its reply) finds its own entry and changes
-- nothing: settling again would spend the turn twice.
--@include budget

local journaled = redis.call('HGET', KEY.journal, ARG.field)
if journaled == ARG.entry then return journaled end
if ARG.settle_field ~= '' then
  settle_budget(KEY.budget, ARG.settle_field, tonumber(ARG.settle_tokens),
                tonumber(ARG.settle_micro_usd), ARG.settle_mode, ARG.ttl, ARG.settle_token)
end
if not journaled then redis.call('HSET', KEY.journal, ARG.field, ARG.entry) end
redis.call('EXPIRE', KEY.journal, ARG.ttl)
return journaled  -- false (nil to the caller) when this call journaled the turn
