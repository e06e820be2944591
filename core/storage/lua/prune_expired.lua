-- Forget up to `limit` posts of a forum that expired before `before`: they leave the live set
-- and their counts leave the statistics hash. The forum totals, windowed ones too, keep them.
-- KEYS[1]  the forum's live set      P:{f:F}:live
-- KEYS[2]  the forum's statistics    P:{f:F}:stats
-- ARGV[1]  before (unix seconds)
-- ARGV[2]  limit
-- Returns how many posts were forgotten. Built by core.storage.counting.prune_expired_call.
local live, stats = KEYS[1], KEYS[2]
local posts = redis.call('ZRANGEBYSCORE', live, '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, post in ipairs(posts) do
  redis.call('ZREM', live, post)
  redis.call('HDEL', stats, 'i:' .. post, 'c:' .. post)
end
return #posts
