-- Forget up to `limit` posts of a forum that expired, and up to `limit` that were withdrawn,
-- before `before`: they leave the live (or withdrawn) set and their counts leave the
-- statistics hash, decayed ones too. The forum totals, windowed and decayed ones too, keep them.
-- KEYS[1]  the forum's live set                P:{f:F}:live
-- KEYS[2]  the forum's statistics              P:{f:F}:stats
-- KEYS[3]  the forum's withdrawn posts         P:{f:F}:gone
-- KEYS[4]  the forum's change log              P:{f:F}:changes
-- KEYS[4+k] the counts of experiment k in the forum, for each experiment that may have
--          counted there (K of them)           P:{f:F}:vstats:X
-- ARGV[1]  before (unix seconds)
-- ARGV[2]  limit
-- ARGV[2+k] experiment k's variant names, joined by '|' (no name holds it)
-- A forgotten post's fields also leave each experiment's counts (`V|i:<post>`, `V|c:<post>` and
-- their decayed fields, for each variant V and `*`); the variant totals keep them, as the
-- forum's do.
-- Returns {how many posts were forgotten, 1 when the forum now holds no post (its change log
-- is then deleted: the forum may be forgotten) else 0}.
-- Built by core.storage.counting.prune_expired_call.
local live, stats, gone, changes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local pruned = 0
for _, set in ipairs({live, gone}) do
  local posts = redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
  for _, post in ipairs(posts) do
    redis.call('ZREM', set, post)
    redis.call('HDEL', stats, 'i:' .. post, 'c:' .. post, 'di:' .. post, 'dc:' .. post,
               'dt:' .. post)
    for k = 5, #KEYS do
      local fields = {}
      for variant in string.gmatch('*|' .. ARGV[k - 2], '[^|]+') do
        for _, name in ipairs({'i:', 'c:', 'di:', 'dc:', 'dt:'}) do
          fields[#fields + 1] = variant .. '|' .. name .. post
        end
      end
      redis.call('HDEL', KEYS[k], unpack(fields))
    end
  end
  pruned = pruned + #posts
end
if redis.call('ZCARD', live) + redis.call('ZCARD', gone) > 0 then
  return {pruned, 0}
end
redis.call('DEL', changes)
return {pruned, 1}
