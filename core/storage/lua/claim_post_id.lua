-- Claim a post id for a forum, or extend the claim: the id's tombstone, which names the post's
-- forum as long as any trace of the post may remain (withdrawn or not), so that an id is never
-- registered in two forums, nor again after a withdrawal, until everything about it is gone.
-- KEYS[1]  the id's tombstone       P:{p:ID}:forum   (one key: its own slot)
-- ARGV[1]  forum id
-- ARGV[2]  seconds the claim lasts from now when it is made, or (ARGV[3] = '1') must at least
--          last when it is extended (never shortened)
-- ARGV[3]  '1': extend an existing claim of this forum; '0': leave it as it is
-- Returns the forum that holds the id: ARGV[1] when the claim is (now) this forum's, another
-- forum's id when the id belongs there (nothing is changed then).
-- Built by core.storage.catalogue.claim_post_id_call.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return owner
end
local ttl = tonumber(ARGV[2])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
elseif ARGV[3] == '1' and redis.call('TTL', KEYS[1]) < ttl then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return ARGV[1]
