-- Count a slate served by an experiment's variant, and its member once (atomic: one slot,
-- the experiment's {xres:X}).
-- KEYS[1]  the experiment's members      P:{xres:X}:members
-- KEYS[2]  its slate and member counts   P:{xres:X}:counts
-- ARGV[1]  the member id
-- ARGV[2]  the variant
-- ARGV[3]  the member's statistics bucket
-- ARGV[4]  ttl of both keys (seconds), set again with every slate
-- ARGV[5]  slates to count: 1 for a served slate, -1 for one taken back before it was given
--          out (its member stays counted: the slate chosen again in its place is served)
-- Adds ARGV[5] to `V|B|s`, and 1 to `V|B|m` when the member is new to the experiment.
-- Returns 1 when the member was new, else 0. Built by core.storage.experiment_counts.count_slate_call.
local members, counts = KEYS[1], KEYS[2]
local field = ARGV[2] .. '|' .. ARGV[3] .. '|'
redis.call('HINCRBY', counts, field .. 's', ARGV[5])
local new = 0
if tonumber(ARGV[5]) > 0 and redis.call('SADD', members, ARGV[1]) == 1 then
  redis.call('HINCRBY', counts, field .. 'm', 1)
  new = 1
end
redis.call('EXPIRE', members, ARGV[4])
redis.call('EXPIRE', counts, ARGV[4])
return new
