-- Register or update a post in its forum: check and write its metadata, its liveness and the
-- forum's change log in one atomic step, so a withdrawal is never undone by a racing update.
-- KEYS[1]  the post's metadata                 P:{f:F}:post:ID
-- KEYS[2]  the forum's live set                P:{f:F}:live
-- KEYS[3]  the forum's change log              P:{f:F}:changes
-- KEYS[4]  the forum's statistics              P:{f:F}:stats
-- KEYS[5]  the forum's withdrawn posts         P:{f:F}:gone
-- ARGV[1]  post id
-- ARGV[2]  forum id
-- ARGV[3]  now (unix seconds)
-- ARGV[4]  created_at (unix seconds), or '': the post's own (a new post: now)
-- ARGV[5]  lifetime (seconds), or '': the post's own, expires_at - created_at (a new post: ARGV[6])
-- ARGV[6]  a new post's default lifetime (seconds)
-- ARGV[7]  retention: the metadata outlives the post's expiry by this (seconds)
-- ARGV[8]  how long the change log keeps a change (microseconds)
-- Returns {0} when the post was withdrawn (nothing is written), else {1, new (1/0), created_at,
-- expires_at}. A new post (no metadata: never seen, or forgotten) starts with no counts: any
-- left in the forum's statistics by an earlier life of the id are removed, decayed ones too.
-- Built by core.storage.catalogue.put_post_call.
-- include: note_changes
local meta, live, changes, stats, gone = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local post, now = ARGV[1], tonumber(ARGV[3])
local old = redis.call('HMGET', meta, 'created_at', 'expires_at', 'deleted')
if old[3] == '1' then
  return {0}
end
local created, lifetime, new = ARGV[4], ARGV[5], 0
if old[1] then
  if lifetime == '' then
    lifetime = tonumber(old[2]) - tonumber(old[1])
  end
  if created == '' then
    created = old[1]
  end
else
  new = 1
  if created == '' then
    created = ARGV[3]
  end
  if lifetime == '' then
    lifetime = ARGV[6]
  end
  redis.call('HDEL', stats, 'i:' .. post, 'c:' .. post, 'di:' .. post, 'dc:' .. post,
             'dt:' .. post)
  redis.call('ZREM', gone, post)
end
local expires = tonumber(created) + tonumber(lifetime)
local expires_text = string.format('%.17g', expires)
redis.call('HSET', meta, 'forum_id', ARGV[2], 'created_at', created, 'expires_at', expires_text,
  'deleted', 0)
redis.call('EXPIRE', meta, math.ceil(math.max(expires - now, 0) + tonumber(ARGV[7])))
redis.call('ZADD', live, expires_text, post)
note_changes(changes, {post}, tonumber(ARGV[8]))
return {1, new, created, expires_text}
