-- dead_letter: a terminal error with the message that caused it, on the dead-letter stream,
-- and its audit event.
--
-- dead_letter(dlq, maxlen, letter, at, task_key, cfg)
--   dlq       the dead-letter stream key
--   maxlen    letters kept (approximate)
--   letter    JSON {task_id, agent, code, error, body[, options]} (workers/deadletters.py
--             truncates the body and leaves options out when it did)
--   at        ISO time of the letter
--   task_key  the task hash for the audit snapshot ('' for none)
--   cfg       the audit stream (see lib/audit.lua)
--@include audit

local function dead_letter(dlq, maxlen, letter, at, task_key, cfg)
  local l = cjson.decode(letter)
  local fields = {'task_id', l.task_id, 'agent', l.agent, 'code', l.code, 'error', l.error,
                  'body', l.body, 'at', at}
  if l.options then
    table.insert(fields, 'options')
    table.insert(fields, l.options)
  end
  redis.call('XADD', dlq, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  local detail = {task_id = l.task_id, agent = l.agent, code = l.code, error = l.error,
                  body = l.body, at = at, options = l.options}
  audit(cfg, task_key, l.task_id, 'dead_letter',
        {'at', at, 'agent', l.agent, 'status', l.code, 'detail', cjson.encode(detail)})
end
