-- Remember a served slate for attribution (the member's posts to hide were read before it
-- was chosen: core.storage.serving.Serving.to_hide).
-- KEYS[1]  the served slate          P:{u:T}:served:R
-- ARGV[1]  ttl of the slate (seconds)
-- ARGV[2..] the slate's hash, field/value pairs: 'u' member, 'p' policy, 'x' experiment and
--          'v' variant (when one served it), '#'..post -> forum
-- Returns 1. Built by core.storage.serving.serve_slate_call.
redis.call('HSET', KEYS[1], unpack(ARGV, 2, #ARGV))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
