-- Withdraw a post for good, in one atomic step with its forum's live set and change log: the
-- metadata says withdrawn (and is kept as long as the id's tombstone), the post leaves the live
-- set, and waits in the forum's withdrawn set until pruning removes its counts.
-- KEYS[1]  the post's metadata                 P:{f:F}:post:ID
-- KEYS[2]  the forum's live set                P:{f:F}:live
-- KEYS[3]  the forum's change log              P:{f:F}:changes
-- KEYS[4]  the forum's withdrawn posts         P:{f:F}:gone
-- ARGV[1]  post id
-- ARGV[2]  forum id
-- ARGV[3]  now (unix seconds): when pruning may remove its counts is counted from this
-- ARGV[4]  how long the withdrawal is remembered (seconds; the tombstone's lifetime)
-- ARGV[5]  how long the change log keeps a change (microseconds)
-- Returns 1 when the post was withdrawn now, 0 when it already was.
-- Built by core.storage.catalogue.withdraw_post_call.
-- include: note_changes
local meta, live, changes, gone = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local post = ARGV[1]
local before = redis.call('HGET', meta, 'deleted')
redis.call('HSET', meta, 'forum_id', ARGV[2], 'deleted', 1)
redis.call('EXPIRE', meta, ARGV[4])
redis.call('ZREM', live, post)
redis.call('ZADD', gone, 'NX', ARGV[3], post)
note_changes(changes, {post}, tonumber(ARGV[5]))
if before == '1' then
  return 0
end
return 1
