-- Stop the running experiment, and promote one of its variants or return to the configured
-- policy (atomic: one slot, {experiments}).
-- KEYS[1]  the serving state         P:{experiments}:serving
-- KEYS[2]  the experiment            P:{experiments}:experiment:ID
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  the promoted variant's name, or '' for none
-- ARGV[3]  what then serves everyone (JSON: experiment, variant, policy, params), or '' for
--          the configured policy
-- Returns 'stopped' (by this call), 'already_stopped' or 'unknown'.
-- Built by core.storage.experiments.stop_experiment_call.
local serving, experiment = KEYS[1], KEYS[2]
local status = redis.call('HGET', experiment, 'status')
if not status then
  return 'unknown'
end
if status ~= 'running' then
  return 'already_stopped'
end
redis.call('HSET', experiment, 'status', 'stopped', 'stopped_at', ARGV[1], 'promoted', ARGV[2])
redis.call('HINCRBY', serving, 'version', 1)
redis.call('HSET', serving, 'experiment', '', 'definition', '')
if ARGV[3] == '' then
  redis.call('HDEL', serving, 'promoted')
else
  redis.call('HSET', serving, 'promoted', ARGV[3])
end
return 'stopped'
