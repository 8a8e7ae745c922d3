-- dragon presence v1: every change to presence is one call of this script (see
-- docs/presence.md). KEYS[1] = the version counter; ARGV[1] = operation, ARGV[2] = the key
-- base ('{<prefix>presence}:'), ARGV[3] = the channel, ARGV[4] = this node's id.
local op, base, channel, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local seqkey = KEYS[1]
local nodes = base .. 'nodes'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Versions never go back, even if Redis lost the counter: at least the time in microseconds.
local function next_version()
  local t = redis.call('TIME')
  local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = tonumber(redis.call('INCR', seqkey))
  if v < floor then
    v = floor
    redis.call('SET', seqkey, string.format('%.0f', v))
  end
  return string.format('%.0f', v)
end

local function hash_of(route, kj)
  return base .. 'k:' .. route .. ':' .. kj
end

local function members_of(hk)
  local n = redis.call('HLEN', hk)
  if redis.call('HEXISTS', hk, '#') == 1 then n = n - 1 end
  return n
end

-- After a key's members changed: a new version (an empty key is deleted) and the diff.
local function announce(hk, route, kj, joins, leaves)
  local prev = redis.call('HGET', hk, '#') or '0'
  local v = next_version()
  if members_of(hk) == 0 then
    redis.call('DEL', hk)
  else
    redis.call('HSET', hk, '#', v)
  end
  redis.call('PUBLISH', channel, '{"route":' .. cjson.encode(route) .. ',"key":' .. kj ..
    ',"version":' .. v .. ',"prev":' .. prev .. ',"joins":[' .. table.concat(joins, ',') ..
    '],"leaves":[' .. table.concat(leaves, ',') .. ']}')
  return v
end

-- Removes every member a node holds, one diff per key.
local function reap(node)
  local set = base .. 'node:' .. node
  local groups, order = {}, {}
  for _, e in ipairs(redis.call('SMEMBERS', set)) do
    local route, kj, conn = string.match(e, '^(.-)\n(.-)\n(.*)$')
    if route then
      local hk = hash_of(route, kj)
      local g = groups[hk]
      if not g then
        g = {route = route, kj = kj, conns = {}}
        groups[hk] = g
        table.insert(order, hk)
      end
      table.insert(g.conns, conn)
    end
  end
  for _, hk in ipairs(order) do
    local g = groups[hk]
    local leaves = {}
    for _, conn in ipairs(g.conns) do
      local m = redis.call('HGET', hk, conn)
      if m then
        redis.call('HDEL', hk, conn)
        table.insert(leaves, m)
      end
    end
    if #leaves > 0 then announce(hk, g.route, g.kj, {}, leaves) end
  end
  redis.call('DEL', set)
  redis.call('ZREM', nodes, node)
end

if op == 'join' then
  -- ARGV[5..9] = route, key JSON, conn, member JSON, max members
  local route, kj, conn, member = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local hk = hash_of(route, kj)
  local old = redis.call('HGET', hk, conn)
  if old == member then return redis.call('HGET', hk, '#') or '0' end
  if not old and members_of(hk) >= tonumber(ARGV[9]) then return 'full' end
  redis.call('HSET', hk, conn, member)
  redis.call('SADD', base .. 'node:' .. me, route .. '\n' .. kj .. '\n' .. conn)
  return announce(hk, route, kj, {member}, {})
elseif op == 'leave' then
  -- ARGV[5..7] = route, key JSON, conn
  local route, kj, conn = ARGV[5], ARGV[6], ARGV[7]
  local hk = hash_of(route, kj)
  redis.call('SREM', base .. 'node:' .. me, route .. '\n' .. kj .. '\n' .. conn)
  local old = redis.call('HGET', hk, conn)
  if not old then return '0' end
  redis.call('HDEL', hk, conn)
  return announce(hk, route, kj, {}, {old})
elseif op == 'read' then
  -- ARGV[5..6] = route, key JSON. The hash, or for a key without members the counter.
  local all = redis.call('HGETALL', hash_of(ARGV[5], ARGV[6]))
  if #all == 0 then return {'#', redis.call('GET', seqkey) or '0'} end
  return all
elseif op == 'lease' then
  -- ARGV[5] = lease length in ms. Returns 1 if the lease was missing (re-announce).
  return redis.call('ZADD', nodes, now_ms() + tonumber(ARGV[5]), me)
elseif op == 'reap' then
  -- ARGV[5] = 'self' to retire this node, else: every node whose lease expired.
  if ARGV[5] == 'self' then
    reap(me)
    return 1
  end
  local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now_ms(), 'LIMIT', 0, 16)
  for _, node in ipairs(dead) do reap(node) end
  return #dead
end
return redis.error_reply('ERR dragon presence: unknown operation ' .. tostring(op))
