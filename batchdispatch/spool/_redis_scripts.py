"""RedisSpool's keys and the Lua scripts that change them, each atomic on the server.

Keys (``{name}`` is a Redis Cluster hash tag: every key of a spool lives
in one slot, as scripts need):

``{name}:q``
    The queue: a stream with one consumer group, ``batchdispatch``. Every
    entry is pending in the group: to the consumer ``!free`` while it is
    free, to its owner's token while held, to ``!undecodable`` once it
    could not be decoded. Fields: ``k`` (the key, JSON), ``d`` (the data),
    ``t`` (``j`` JSON text, ``s`` other text, ``b`` bytes) and, for a
    durable append, ``a``. An entry's id is its place in the order.
``{name}:lease:<token>``
    An owner's lease: a key that expires *lease* seconds after its last
    renewal. An owner without one is dead.
``{name}:dead``
    The dead letters: a stream with the same fields plus ``e`` (the
    error's text) and ``n`` (the attempts).

Free entries are kept pending to ``!free`` (never left undelivered in the
group) so that a free entry keeps its place when it is released, and a
claim reads the oldest with one ``XPENDING``. Writes add their entries and
deliver them at once, in the same script, to ``!free`` or to their owner
(delivery count 1). A claim sets the delivery count of what it takes to a
random tag of its own (``RETRYCOUNT``), by which a later claim finds the
entries of one whose answer was lost.
"""

from __future__ import annotations

GROUP = "batchdispatch"
FREE = "!free"
UNDECODABLE = "!undecodable"

#: KEYS: queue. ARGV: group, consumer, appended flag, then (key, data, type) per entry.
#: Adds the entries, delivered to *consumer*; returns their ids, in order.
ADD = """
local ids = {}
for i = 4, #ARGV, 3 do
  if ARGV[3] == '1' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'k', ARGV[i], 'd', ARGV[i + 1], 't', ARGV[i + 2],
                               'a', '1')
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'k', ARGV[i], 'd', ARGV[i + 1], 't', ARGV[i + 2])
  end
end
if #ids > 0 then
  redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', #ids, 'STREAMS', KEYS[1], '>')
end
return ids
"""

#: KEYS: queue. ARGV: group, owner, then ids. For each id pending to *owner*:
#: XACK and XDEL it. Returns how many.
ACK = """
local done = 0
for i = 3, #ARGV do
  local found = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #found > 0 then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    done = done + 1
  end
end
return done
"""

#: KEYS: queue. ARGV: group, owner, free consumer, then ids. For each id pending to
#: *owner* that is not a durable append: give it to the free consumer (it keeps its
#: place). Returns how many.
RELEASE = """
local done = 0
for i = 4, #ARGV do
  local found = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #found > 0 then
    local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    local appended = false
    for j = 1, #entry[1][2], 2 do
      if entry[1][2][j] == 'a' then appended = true end
    end
    if not appended then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[i], 'JUSTID')
      done = done + 1
    end
  end
end
return done
"""

#: KEYS: queue. ARGV: group, free consumer, then the tokens of dead owners.
#: Frees what they hold: claimed and parked entries keep their place, durable
#: appends are added again as the newest, in order; then the consumers are removed.
FREE_OWNERS = """
for i = 3, #ARGV do
  local owner = ARGV[i]
  while true do
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 500, owner)
    if #pending == 0 then break end
    for _, p in ipairs(pending) do
      local id = p[1]
      local entry = redis.call('XRANGE', KEYS[1], id, id)
      local fields = entry[1] and entry[1][2]
      local appended = false
      if fields then
        for j = 1, #fields, 2 do
          if fields[j] == 'a' then appended = true end
        end
      end
      if appended then
        local k, d, t
        for j = 1, #fields, 2 do
          if fields[j] == 'k' then k = fields[j + 1] end
          if fields[j] == 'd' then d = fields[j + 1] end
          if fields[j] == 't' then t = fields[j + 1] end
        end
        redis.call('XADD', KEYS[1], '*', 'k', k, 'd', d, 't', t)
        redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
        redis.call('XACK', KEYS[1], ARGV[1], id)
        redis.call('XDEL', KEYS[1], id)
      elseif fields then
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
      else
        redis.call('XACK', KEYS[1], ARGV[1], id)
      end
    end
  end
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], owner)
end
return 0
"""

#: KEYS: queue. ARGV: group, free consumer, owner, limit, tag, then the tags of claims
#: whose answer was lost. Frees the entries pending to *owner* with those tags (each
#: keeps its place), then takes the oldest free entries for *owner*, tagged with *tag*
#: (as their delivery count); returns them as XCLAIM does: {id, {field, value, ...}}.
CLAIM = """
if #ARGV > 5 then
  local lost = {}
  for i = 6, #ARGV do lost[tonumber(ARGV[i])] = true end
  local start = '-'
  while true do
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', 500, ARGV[3])
    local ids = {}
    for _, p in ipairs(pending) do
      if lost[p[4]] and p[1] ~= start then ids[#ids + 1] = p[1] end
    end
    if #ids > 0 then
      ids[#ids + 1] = 'JUSTID'
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
    end
    if #pending < 500 then break end
    start = pending[#pending][1]
  end
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
if #pending == 0 then return {} end
local taken = {}
for start = 1, #pending, 500 do
  local ids = {}
  for i = start, math.min(start + 499, #pending) do ids[#ids + 1] = pending[i][1] end
  ids[#ids + 1] = 'RETRYCOUNT'
  ids[#ids + 1] = ARGV[5]
  for _, entry in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, unpack(ids))) do
    taken[#taken + 1] = entry
  end
end
return taken
"""

#: KEYS: queue, dead. ARGV: group, owner, error, attempts, count of held ids, the
#: held ids, then (key, data, type) per entry written anew. Returns how many were made.
BURY = """
local made = 0
local held = tonumber(ARGV[5])
for i = 6, 5 + held do
  local found = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #found > 0 then
    local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if entry[1] then
      local fields = entry[1][2]
      local k, d, t
      for j = 1, #fields, 2 do
        if fields[j] == 'k' then k = fields[j + 1] end
        if fields[j] == 'd' then d = fields[j + 1] end
        if fields[j] == 't' then t = fields[j + 1] end
      end
      redis.call('XADD', KEYS[2], '*', 'k', k, 'd', d, 't', t, 'e', ARGV[3], 'n', ARGV[4])
      made = made + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
for i = 6 + held, #ARGV, 3 do
  redis.call('XADD', KEYS[2], '*', 'k', ARGV[i], 'd', ARGV[i + 1], 't', ARGV[i + 2],
             'e', ARGV[3], 'n', ARGV[4])
  made = made + 1
end
return made
"""

#: KEYS: queue, dead. ARGV: group, free consumer, then ids of dead letters. Moves
#: them back to the queue as the newest free entries, in order. Returns how many.
REQUEUE = """
local done = 0
for i = 3, #ARGV do
  local entry = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if entry[1] then
    local fields = entry[1][2]
    local k, d, t
    for j = 1, #fields, 2 do
      if fields[j] == 'k' then k = fields[j + 1] end
      if fields[j] == 'd' then d = fields[j + 1] end
      if fields[j] == 't' then t = fields[j + 1] end
    end
    redis.call('XADD', KEYS[1], '*', 'k', k, 'd', d, 't', t)
    redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
    redis.call('XDEL', KEYS[2], ARGV[i])
    done = done + 1
  end
end
return done
"""
