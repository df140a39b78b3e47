-- settle: replace one hold by what its call cost (or by nothing, when the call failed).
--
-- KEYS
--   budget  the task's budget hash (see lib/budget.lua)
-- ARGV
--   field       input message id and call number
--   tokens      what the call cost in tokens
--   micro_usd   and in micro-dollars
--   mode        'settle' (it answered) or 'release' (it failed)
--   ttl         seconds the budget hash lives
--   token       this settlement's own name: sent again, it settles nothing
--@include budget

settle_budget(KEY.budget, ARG.field, tonumber(ARG.tokens), tonumber(ARG.micro_usd), ARG.mode,
              ARG.ttl, ARG.token)
return 1
