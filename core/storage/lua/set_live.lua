-- Make a post live until its expiry, or withdraw it, and note the change in the forum's log.
-- KEYS[1]  the forum's live set      P:{f:F}:live
-- KEYS[2]  the forum's change log    P:{f:F}:changes
-- ARGV[1]  post id
-- ARGV[2]  expiry (unix seconds), or '' to withdraw the post
-- ARGV[3]  how long the change log keeps a change (microseconds)
-- Built by core.storage.catalogue.set_live_call.
-- include: note_changes
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
note_changes(KEYS[2], {ARGV[1]}, tonumber(ARGV[3]))
