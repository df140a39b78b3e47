-- dead_letter: a dead letter on its own, for what has no step record to ride with (a message
-- that could not be decoded, an audit row SQL refused). A step's own dead letter goes in
-- record_step's call instead.
--
-- KEYS
--   dead_letters  the dead-letter stream
--   audit         the audit stream
--   task          the task hash, for the audit snapshot (a missing task sends none)
-- ARGV
--   letter        JSON {task_id, agent, code, error, body[, options]}
--   maxlen        dead letters kept
--   now           ISO time of the letter
--   audit_maxlen  audit events kept; '0' writes none
--   audit_minid   oldest audit stream id kept; '' keeps any age
--@include dead_letter

local cfg = {stream = KEY.audit, maxlen = ARG.audit_maxlen, minid = ARG.audit_minid}
dead_letter(KEY.dead_letters, ARG.maxlen, ARG.letter, ARG.now, KEY.task, cfg)
return 1
