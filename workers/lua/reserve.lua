-- reserve: hold a call's worst case against its task's budget, after settling the step's
-- previous call in the same round trip.
--
-- KEYS
--   task    the task hash (its budget_tokens and budget_micro_usd limits)
--   budget  the task's budget hash (see lib/budget.lua)
-- ARGV
--   hold_field         input message id and call number
--   hold_tokens        the call's worst case in tokens
--   hold_micro_usd     and in micro-dollars
--   default_tokens     the limits of a task that set none
--   default_micro_usd
--   ttl                seconds the budget hash lives
--   settle_field       the previous call's field ('' settles nothing), then
--   settle_tokens      what it cost in tokens
--   settle_micro_usd   and micro-dollars,
--   settle_mode        'settle' (it answered) or 'release' (it failed)
--   settle_token       the settlement's own name (sent again, it settles nothing)
--
-- Returns nil when held, else {what, used, want, limit} and holds nothing.
--@include budget

if ARG.settle_field ~= '' then
  settle_budget(KEY.budget, ARG.settle_field, tonumber(ARG.settle_tokens),
                tonumber(ARG.settle_micro_usd), ARG.settle_mode, ARG.ttl, ARG.settle_token)
end
return reserve_budget(KEY.task, KEY.budget, ARG.hold_field, tonumber(ARG.hold_tokens),
                      tonumber(ARG.hold_micro_usd), ARG.default_tokens, ARG.default_micro_usd,
                      ARG.ttl)
