//! Sessions in Redis: every node of a cluster sees them.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection, Script};
use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::{PersistOp, SessionId};

use super::{
    Change, Claim, Forward, Inbox, Retention, SavedSession, SessionStore, SessionStoreError, Swept,
};
use crate::registry::lock;

/// Each batch of changes is one Lua script: atomic, in order. Keys (under
/// the prefix P): `P:s:ID` a hash (`state`, `subject`, `saved`,
/// `expired`), `P:m:ID` the messages in segments (a hash: the first and
/// last seq, `FIRST:LAST` in hex → the segment, see [`segment_of`]), and
/// two sorted sets by last write, `P:live` (sessions with their state)
/// and `P:rec` (records of expired ones). A change to a session held under another claim, or
/// that has no `P:s:ID` (removed, or lost: a FLUSHALL), is refused and
/// the session reported, as in every backend.
const APPLY: &str = r#"
local p, now = ARGV[1], ARGV[2]
local i = 3
local ok, fenced = {}, {}
local function s(id) return p .. ':s:' .. id end
local function m(id) return p .. ':m:' .. id end
local function live(id)
  redis.call('ZADD', p .. ':live', now, id)
  redis.call('ZREM', p .. ':rec', id)
end
local seen, moved, stamped = {}, {}, {}
-- A segment's messages into the session's inbox, as posts ([binary
-- flag][payload]; the record: tag, version, flags, three LEB128 varints,
-- payload): what a node writes for a session another node has claimed
-- reaches it there instead of being lost.
local function forward(id, segment)
  local at = 1
  while at + 23 <= #segment do
    local len = tonumber(string.sub(segment, at + 16, at + 23), 16)
    if not len then break end
    local record = string.sub(segment, at + 24, at + 23 + len)
    local k = 4
    for _ = 1, 3 do
      while (string.byte(record, k) or 0) >= 128 do k = k + 1 end
      k = k + 1
    end
    local flags = string.byte(record, 3) or 0
    redis.call('RPUSH', p .. ':in:' .. id, string.char(flags % 2) .. string.sub(record, k))
    at = at + 24 + len
  end
  redis.call('SADD', p .. ':mail', id)
  redis.call('PUBLISH', p .. ':hint', id)
end
local function fence(id)
  ok[id] = false
  if not seen[id] then
    seen[id] = true
    table.insert(fenced, id)
  end
end
local function leave_all(id)
  local peer = redis.call('HGET', s(id), 'peer')
  for _, room in ipairs(redis.call('SMEMBERS', p .. ':r:' .. id)) do
    if peer then redis.call('SREM', p .. ':room:' .. room, peer) end
  end
  redis.call('DEL', p .. ':r:' .. id)
end
-- Inbox appends wait for the end of the script, in the order they were
-- made (posts and forwards alike: a forward is decided only then).
-- A post made while delivering a message of session `by` ('' if none)
-- is dropped if that delivery is refused here (it is made again where
-- the session goes).
local later = {}
local function post(peer, data, by)
  table.insert(later, {peer, data, by ~= '' and by})
end
local function post_now(peer, data)
  local to = redis.call('HGET', p .. ':peers', peer)
  if to then
    redis.call('RPUSH', p .. ':in:' .. to, data)
    redis.call('SADD', p .. ':mail', to)
    redis.call('PUBLISH', p .. ':hint', to)
  end
end
local function excluded(from, count)
  local set = {}
  for k = 0, count - 1 do set[ARGV[from + k]] = true end
  return set
end
local function meta(id, claim, state, has_subject, subject, expired, peer)
  redis.call('DEL', m(id))
  redis.call('DEL', s(id))
  redis.call('HSET', s(id), 'state', state, 'saved', now, 'expired', expired, 'claim', claim,
    'peer', peer)
  if has_subject == '1' then redis.call('HSET', s(id), 'subject', subject) end
end
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i + 1]
  if op == 'O' then
    leave_all(id)
    meta(id, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], '0', ARGV[i + 6])
    redis.call('DEL', p .. ':in:' .. id)
    redis.call('HSET', p .. ':peers', ARGV[i + 6], id)
    live(id)
    ok[id] = true
    i = i + 7
  elseif op == 'E' then
    local held = redis.call('HGET', s(id), 'claim')
    if held and held ~= ARGV[i + 2] then
      fence(id)
    else
      leave_all(id)
      meta(id, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], '1', ARGV[i + 6])
      redis.call('ZADD', p .. ':rec', now, id)
      redis.call('ZREM', p .. ':live', id)
    end
    i = i + 7
  elseif op == 'M' then
    local count = tonumber(ARGV[i + 4])
    if redis.call('HGET', s(id), 'claim') ~= ARGV[i + 2] then
      fence(id)
    else
      redis.call('HSET', s(id), 'rooms', ARGV[i + 3], 'saved', now)
      leave_all(id)
      local peer = redis.call('HGET', s(id), 'peer')
      for k = 0, count - 1 do
        local room = ARGV[i + 5 + k]
        redis.call('SADD', p .. ':r:' .. id, room)
        redis.call('SADD', p .. ':rooms', room)
        if peer then redis.call('SADD', p .. ':room:' .. room, peer) end
      end
    end
    i = i + 5 + count
  elseif op == 'G' then
    local count = tonumber(ARGV[i + 4])
    local skip = excluded(i + 5, count)
    for _, peer in ipairs(redis.call('SMEMBERS', p .. ':room:' .. id)) do
      if not skip[peer] then post(peer, ARGV[i + 2], ARGV[i + 3]) end
    end
    i = i + 5 + count
  elseif op == 'B' then
    local count = tonumber(ARGV[i + 4])
    local skip = excluded(i + 5, count)
    for _, peer in ipairs(redis.call('HKEYS', p .. ':peers')) do
      if not skip[peer] then post(peer, ARGV[i + 2], ARGV[i + 3]) end
    end
    i = i + 5 + count
  elseif op == 'T' then
    local held = redis.call('HGET', s(id), 'claim')
    if held ~= ARGV[i + 2] then
      fence(id)
      -- claimed by another node (not removed, not lost)
      if held then moved[id] = true end
    else
      ok[id] = true
      -- stamped once per script, however many changes the session has
      if not stamped[id] then
        stamped[id] = true
        redis.call('HSET', s(id), 'saved', now)
        if redis.call('HGET', s(id), 'expired') == '0' then live(id) end
      end
    end
    i = i + 3
  elseif op == 'S' then
    if ok[id] then
      redis.call('HSET', s(id), 'state', ARGV[i + 2], 'saved', now, 'expired', '0')
      live(id)
    end
    i = i + 3
  elseif op == 'P' or op == 'F' or op == 'W' then
    -- ('W': the session whose delivery made them), count, then each
    -- segment's name (its first and last seq) and segment. If another node
    -- has claimed the session: 'P' drops them, 'F' posts them to its
    -- inbox, 'W' too unless that delivery's changes are refused here
    local by = false
    if op == 'W' then
      by = ARGV[i + 2]
      i = i + 1
    end
    local count = tonumber(ARGV[i + 2])
    if ok[id] then
      for k = 0, count - 1, 256 do
        local last = math.min(k + 255, count - 1)
        redis.call('HSET', m(id), unpack(ARGV, i + 3 + 2 * k, i + 4 + 2 * last))
      end
    elseif moved[id] and op ~= 'P' then
      for k = 0, count - 1 do
        table.insert(later, {false, id, by, ARGV[i + 4 + 2 * k]})
      end
    end
    i = i + 3 + 2 * count
  elseif op == 'D' then
    -- count, then each range of seqs to delete (first, last; sorted). A
    -- segment's name is its first and last seq (16 hex digits each, ':'
    -- between): one a range covers whole is dropped unread; one a range
    -- touches is read (items: 16 hex digits seq, 8 hex digits length,
    -- record) and written again with what is left
    local count = tonumber(ARGV[i + 2])
    if ok[id] then
      local ranges = {}
      for k = 0, count - 1 do
        ranges[k + 1] = {tonumber(ARGV[i + 3 + 2 * k]), tonumber(ARGV[i + 4 + 2 * k])}
      end
      local function doomed(seq)
        for _, range in ipairs(ranges) do
          if seq >= range[1] and seq <= range[2] then return true end
        end
        return false
      end
      local gone = {}
      for _, name in ipairs(redis.call('HKEYS', m(id))) do
        local first = tonumber(string.sub(name, 1, 16), 16)
        local last = tonumber(string.sub(name, 18, 33), 16)
        local whole, touched = false, false
        if first and last then
          for _, range in ipairs(ranges) do
            if first >= range[1] and last <= range[2] then whole = true end
            if range[1] <= last and range[2] >= first then touched = true end
          end
        end
        if whole then
          gone[#gone + 1] = name
        elseif touched then
          local segment = redis.call('HGET', m(id), name) or ''
          local kept, keep_first, keep_last = {}, nil, nil
          local at = 1
          while at + 23 <= #segment do
            local seq = tonumber(string.sub(segment, at, at + 15), 16)
            local len = tonumber(string.sub(segment, at + 16, at + 23), 16)
            -- damaged (not written by this script): the rest is dropped
            if not seq or not len then break end
            local stop = at + 23 + len
            if not doomed(seq) then
              kept[#kept + 1] = string.sub(segment, at, stop)
              keep_first = keep_first or string.sub(segment, at, at + 15)
              keep_last = string.sub(segment, at, at + 15)
            end
            at = stop + 1
          end
          -- at once: the rewrite may keep the name (its ends kept)
          redis.call('HDEL', m(id), name)
          if keep_first then
            redis.call('HSET', m(id), keep_first .. ':' .. keep_last, table.concat(kept))
          end
        end
      end
      for k = 1, #gone, 512 do
        redis.call('HDEL', m(id), unpack(gone, k, math.min(k + 511, #gone)))
      end
    end
    i = i + 3 + 2 * count
  elseif op == 'C' then
    if ok[id] then redis.call('DEL', m(id)) end
    i = i + 2
  elseif op == 'R' then
    leave_all(id)
    local peer = redis.call('HGET', s(id), 'peer')
    if peer then redis.call('HDEL', p .. ':peers', peer) end
    redis.call('DEL', s(id), m(id), p .. ':in:' .. id)
    redis.call('SREM', p .. ':mail', id)
    redis.call('ZREM', p .. ':live', id)
    redis.call('ZREM', p .. ':rec', id)
    ok[id] = false
    i = i + 2
  elseif op == 'A' then
    for _, set in ipairs({':live', ':rec'}) do
      for _, each in ipairs(redis.call('ZRANGE', p .. set, 0, -1)) do
        redis.call('DEL', s(each), m(each), p .. ':in:' .. each, p .. ':r:' .. each)
        ok[each] = false
      end
      redis.call('DEL', p .. set)
    end
    for _, room in ipairs(redis.call('SMEMBERS', p .. ':rooms')) do
      redis.call('DEL', p .. ':room:' .. room)
    end
    redis.call('DEL', p .. ':peers', p .. ':mail', p .. ':rooms')
    i = i + 1
  elseif op == 'Q' then
    post(id, ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == 'K' then
    if redis.call('HGET', s(id), 'claim') ~= ARGV[i + 2] then
      fence(id)
    else
      redis.call('LTRIM', p .. ':in:' .. id, tonumber(ARGV[i + 3]), -1)
      if redis.call('LLEN', p .. ':in:' .. id) == 0 then
        redis.call('SREM', p .. ':mail', id)
      end
    end
    i = i + 4
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
-- Once every change is in (a delivery refused anywhere in this commit
-- makes its messages again where its session goes), in order.
for _, each in ipairs(later) do
  if each[1] then
    if not each[3] or ok[each[3]] ~= false then post_now(each[1], each[2]) end
  elseif not each[3] or ok[each[3]] ~= false then
    forward(each[2], each[4])
  end
end
return fenced
"#;

/// Claim a session: `KEYS[1]` its hash; `ARGV[1]` the claim. Returns 0 if
/// there is no such session, else 1 (the caller then reads it: nothing
/// can change it in between but the claim's holder).
const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'claim', ARGV[1])
return 1
"#;

/// How the store makes a commit durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Redis 7.2+: `WAITAOF 1 0` after each batch (the local AOF fsynced).
    WaitAof,
    /// Older Redis with `appendfsync always`: fsynced before the reply.
    FsyncAlways,
}

/// Sessions in one Redis (≥ 7.2 with `appendonly yes`, or an older one
/// with `appendonly yes` and `appendfsync always`; refused otherwise, since
/// a commit could then be lost with the Redis process). Every server node
/// pointed at the same Redis sees every session.
pub struct RedisSessions {
    client: Client,
    prefix: String,
    connection: Mutex<Option<Connection>>,
    durability: Durability,
    script: Script,
    claim_script: Script,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("prefix", &self.prefix)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// Connecting, and each command, give up after this long.
const TIMEOUT: Duration = Duration::from_secs(2);
/// `WAITAOF` waits this long (ms) for the fsync.
const WAITAOF_TIMEOUT_MS: u64 = 2_000;

fn failed(error: impl std::fmt::Display) -> SessionStoreError {
    SessionStoreError(format!("redis: {error}"))
}

fn hex(session: &SessionId) -> String {
    session.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<SessionId> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(SessionId(id))
}

fn connect(client: &Client) -> Result<Connection, SessionStoreError> {
    let connection = client
        .get_connection_with_timeout(TIMEOUT)
        .map_err(failed)?;
    connection.set_read_timeout(Some(TIMEOUT)).map_err(failed)?;
    connection
        .set_write_timeout(Some(TIMEOUT))
        .map_err(failed)?;
    Ok(connection)
}

fn config_get(connection: &mut Connection, name: &str) -> Result<String, SessionStoreError> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(connection)
        .map_err(failed)?;
    Ok(pair.get(1).cloned().unwrap_or_default())
}

impl RedisSessions {
    /// Connect to `url` (`redis://HOST:PORT/DB`) and check that it can make
    /// a commit durable; keys go under `prefix` (`steadfast` by default in
    /// the CLI).
    pub fn open(url: &str, prefix: &str) -> Result<RedisSessions, SessionStoreError> {
        let client = Client::open(url).map_err(|e| {
            SessionStoreError(format!(
                "`{url}` is not a Redis URL (redis://HOST:PORT/DB): {e}"
            ))
        })?;
        let mut connection = connect(&client)
            .map_err(|e| SessionStoreError(format!("cannot reach Redis at {url}: {}", e.0)))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut connection)
            .map_err(failed)?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("0")
            .trim()
            .to_owned();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if config_get(&mut connection, "appendonly")? != "yes" {
            return Err(SessionStoreError(format!(
                "redis {version} at {url} runs without `appendonly yes`: a commit would be \
                 lost with the Redis process"
            )));
        }
        let durability = if (major, minor) >= (7, 2) {
            Durability::WaitAof
        } else if config_get(&mut connection, "appendfsync")? == "always" {
            Durability::FsyncAlways
        } else {
            return Err(SessionStoreError(format!(
                "redis {version} at {url} has no WAITAOF (7.2+) and `appendfsync` is not \
                 `always`: a commit could be lost with the Redis process"
            )));
        };
        Ok(RedisSessions {
            client,
            prefix: prefix.to_owned(),
            connection: Mutex::new(Some(connection)),
            durability,
            script: Script::new(APPLY),
            claim_script: Script::new(CLAIM),
        })
    }

    /// Run `f` on the connection, connecting first if the last one failed;
    /// a failure drops it (the next call connects again).
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, SessionStoreError>,
    ) -> Result<T, SessionStoreError> {
        let mut slot = lock(&self.connection);
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => connect(&self.client)?,
        };
        let result = f(&mut connection);
        if result.is_ok() {
            *slot = Some(connection);
        }
        result
    }

    fn key(&self, kind: &str, session: &SessionId) -> String {
        format!("{}:{kind}:{}", self.prefix, hex(session))
    }

    fn run(
        &self,
        connection: &mut Connection,
        args: Vec<Vec<u8>>,
    ) -> Result<Vec<SessionId>, SessionStoreError> {
        let mut invocation = self.script.prepare_invoke();
        for arg in args {
            invocation.arg(arg);
        }
        let fenced: Vec<String> = invocation.invoke(connection).map_err(failed)?;
        self.wait_durable(connection)?;
        Ok(fenced.iter().filter_map(|id| unhex(id)).collect())
    }

    /// Return once the last write is fsynced (WAITAOF on 7.2+; with
    /// `appendfsync always` it already was).
    fn wait_durable(&self, connection: &mut Connection) -> Result<(), SessionStoreError> {
        if self.durability == Durability::WaitAof {
            let acks: Vec<i64> = redis::cmd("WAITAOF")
                .arg(1)
                .arg(0)
                .arg(WAITAOF_TIMEOUT_MS)
                .query(connection)
                .map_err(failed)?;
            if acks.first().copied().unwrap_or(0) < 1 {
                return Err(SessionStoreError(
                    "redis: WAITAOF did not confirm the local fsync in time".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A segment holds at most this many messages, and is closed once it
/// holds this many bytes: the script reads a partly acknowledged segment
/// item by item in Lua, so smaller than the embedded store's.
const SEGMENT_MESSAGES: usize = 64;
const SEGMENT_BYTES: usize = 64 * 1024;

/// Sorted seqs as inclusive ranges of consecutive ones.
fn ranges_of(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seq in seqs {
        match ranges.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(seq) => *last = seq,
            _ => ranges.push((seq, seq)),
        }
    }
    ranges
}

/// A segment as the script reads it: per message, its seq as 16 hex
/// digits, its record's length as 8, then the record. (Lua reads the
/// numbers as doubles: exact up to 2^53, beyond any seq a session
/// reaches — 285 years at a million messages a second.)
fn segment_of(messages: &[&StoredMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        out.extend_from_slice(format!("{:016x}", message.seq).as_bytes());
        let at = out.len();
        out.extend_from_slice(b"00000000");
        message.encode_into(&mut out);
        // A record is one message, far below 4 GiB (the server's limit).
        let len = u32::try_from(out.len() - at - 8).unwrap_or(u32::MAX);
        out[at..at + 8].copy_from_slice(format!("{len:08x}").as_bytes());
    }
    out
}

/// The records of a segment (see [`segment_of`]); stops at a damaged item.
fn records_of(segment: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = segment;
    std::iter::from_fn(move || {
        let header = rest.get(..24)?;
        let len = std::str::from_utf8(&header[16..]).ok()?;
        let len = usize::from_str_radix(len, 16).ok()?;
        let record = rest.get(24..24 + len)?;
        rest = &rest[24 + len..];
        Some(record)
    })
}

fn subject_args(args: &mut Vec<Vec<u8>>, subject: Option<&String>) {
    match subject {
        Some(subject) => {
            args.push(b"1".to_vec());
            args.push(subject.as_bytes().to_vec());
        }
        None => {
            args.push(b"0".to_vec());
            args.push(Vec::new());
        }
    }
}

/// A session id as a script argument.
/// The session whose delivery made a post, or nothing (see `Change::Post`).
fn by_arg(by: &Option<SessionId>) -> Vec<u8> {
    by.as_ref().map(id).unwrap_or_default()
}

fn id(session: &SessionId) -> Vec<u8> {
    hex(session).into_bytes()
}

/// A claim as a script argument.
fn token(claim: &Claim) -> Vec<u8> {
    claim.0.to_string().into_bytes()
}

/// One session's ops: the claim check ('T'), then what they leave behind,
/// one op per kind. The puts' opcode says what the script does with them
/// if another node has claimed the session (see [`Forward`]): 'P' nothing,
/// 'F' post them to its inbox, 'W' (then the delivering session) the same
/// unless that session's changes in the commit were refused.
fn encode_ops(
    args: &mut Vec<Vec<u8>>,
    session: &SessionId,
    claim: Claim,
    ops: &[PersistOp],
    forward: Forward,
) {
    args.push(b"T".to_vec());
    args.push(id(session));
    args.push(token(&claim));
    let net = super::Net::of(ops);
    if net.clear {
        args.push(b"C".to_vec());
        args.push(id(session));
    }
    if !net.deletes.is_empty() {
        let ranges = ranges_of(&net.deletes);
        args.push(b"D".to_vec());
        args.push(id(session));
        args.push(ranges.len().to_string().into_bytes());
        for (first, last) in ranges {
            args.push(first.to_string().into_bytes());
            args.push(last.to_string().into_bytes());
        }
    }
    if !net.puts.is_empty() {
        let segments = super::segments_of(&net.puts, SEGMENT_MESSAGES, SEGMENT_BYTES);
        match forward {
            Forward::Never => args.push(b"P".to_vec()),
            Forward::Always => args.push(b"F".to_vec()),
            Forward::IfDelivered(_) => args.push(b"W".to_vec()),
        }
        args.push(id(session));
        if let Forward::IfDelivered(by) = forward {
            args.push(id(&by));
        }
        args.push(segments.len().to_string().into_bytes());
        for segment in segments {
            let first = segment.first().map_or(0, |m| m.seq);
            let last = segment.last().map_or(0, |m| m.seq);
            args.push(format!("{first:016x}:{last:016x}").into_bytes());
            args.push(segment_of(segment));
        }
    }
    if let Some(state) = net.session {
        args.push(b"S".to_vec());
        args.push(id(session));
        args.push(state.encode());
    }
}

fn encode(args: &mut Vec<Vec<u8>>, change: &Change) {
    match change {
        Change::Open {
            session,
            subject,
            claim,
            peer,
        } => {
            args.push(b"O".to_vec());
            args.push(id(session));
            args.push(token(claim));
            let fresh = StoredSession {
                secret: None,
                session: *session,
                welcomed: false,
                inbound_delivered: 0,
                next_seq: 1,
            };
            args.push(fresh.encode());
            subject_args(args, subject.as_ref());
            args.push(peer.to_string().into_bytes());
        }
        Change::Rooms {
            session,
            claim,
            rooms,
        } => {
            args.push(b"M".to_vec());
            args.push(id(session));
            args.push(token(claim));
            let mut bytes = Vec::new();
            super::encode_rooms(rooms, &mut bytes);
            args.push(bytes);
            args.push(rooms.len().to_string().into_bytes());
            args.extend(rooms.iter().map(|room| room.as_bytes().to_vec()));
        }
        Change::Ops {
            session,
            claim,
            ops,
            forward,
        } => encode_ops(args, session, *claim, ops, *forward),
        Change::Expire {
            session,
            state,
            subject,
            claim,
            peer,
        } => {
            args.push(b"E".to_vec());
            args.push(id(session));
            args.push(token(claim));
            args.push(state.encode());
            subject_args(args, subject.as_ref());
            args.push(peer.to_string().into_bytes());
        }
        Change::Remove { session } => {
            args.push(b"R".to_vec());
            args.push(id(session));
        }
        Change::RemoveAll => args.push(b"A".to_vec()),
        Change::Post {
            peer,
            binary,
            payload,
            by,
        } => {
            // 'Q', the peer (in the id's place), [binary flag][payload], by.
            args.push(b"Q".to_vec());
            args.push(peer.to_string().into_bytes());
            args.push(flagged(*binary, payload));
            args.push(by_arg(by));
        }
        Change::RoomPost {
            room,
            binary,
            payload,
            except,
            by,
        } => {
            // 'G', the room (in the id's place), the data, by, the exceptions.
            args.push(b"G".to_vec());
            args.push(room.as_bytes().to_vec());
            args.push(flagged(*binary, payload));
            args.push(by_arg(by));
            args.push(except.len().to_string().into_bytes());
            args.extend(except.iter().map(|peer| peer.to_string().into_bytes()));
        }
        Change::Broadcast {
            binary,
            payload,
            except,
            by,
        } => {
            args.push(b"B".to_vec());
            args.push(Vec::new());
            args.push(flagged(*binary, payload));
            args.push(by_arg(by));
            args.push(except.len().to_string().into_bytes());
            args.extend(except.iter().map(|peer| peer.to_string().into_bytes()));
        }
        Change::Consumed {
            session,
            claim,
            count,
            ops,
        } => {
            // Never forwarded: they stay in the inbox.
            encode_ops(args, session, *claim, ops, Forward::Never);
            args.push(b"K".to_vec());
            args.push(id(session));
            args.push(token(claim));
            args.push(count.to_string().into_bytes());
        }
    }
}

/// Inbox entries back into (binary, payload).
fn unflag_all(items: Vec<Vec<u8>>) -> Inbox {
    items
        .into_iter()
        .map(|mut item| {
            let binary = item.first() == Some(&1);
            if !item.is_empty() {
                item.remove(0);
            }
            (binary, item)
        })
        .collect()
}

/// An inbox entry: `[binary flag][payload]`.
fn flagged(binary: bool, payload: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(payload.len() + 1);
    data.push(u8::from(binary));
    data.extend_from_slice(payload);
    data
}

/// An `HGETALL` reply.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A field of an `HGETALL` reply, as bytes.
fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(key, _)| key == name.as_bytes())
        .map(|(_, value)| value.as_slice())
}

fn number(bytes: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(bytes?).ok()?.parse().ok()
}

impl SessionStore for RedisSessions {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn durable(&self) -> bool {
        true
    }

    fn load(&self, session: &SessionId) -> Result<Option<SavedSession>, SessionStoreError> {
        let (meta, messages) = self.with(|connection| {
            let replies: (Fields, Fields) = redis::pipe()
                .cmd("HGETALL")
                .arg(self.key("s", session))
                .cmd("HGETALL")
                .arg(self.key("m", session))
                .query(connection)
                .map_err(failed)?;
            Ok(replies)
        })?;
        if meta.is_empty() {
            return Ok(None);
        }
        let state = field(&meta, "state").and_then(|b| StoredSession::decode(b).ok());
        let (Some(state), Some(saved_wall_ms)) = (state, number(field(&meta, "saved"))) else {
            tracing::warn!(session = ?session, "an unreadable session record was ignored");
            return Ok(None);
        };
        let expired = field(&meta, "expired") == Some(b"1");
        let claim = Claim(number(field(&meta, "claim")).unwrap_or(0));
        let peer = number(field(&meta, "peer")).unwrap_or(0);
        let rooms = match field(&meta, "rooms") {
            Some(bytes) if !expired => super::decode_rooms(bytes)
                .map(|(r, _)| r)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let subject = field(&meta, "subject").map(|b| String::from_utf8_lossy(b).into_owned());
        let mut saved = SavedSession {
            state,
            subject,
            saved_wall_ms,
            expired,
            messages: Vec::new(),
            claim,
            peer,
            rooms,
        };
        if !expired {
            for (_, segment) in &messages {
                for record in records_of(segment) {
                    match StoredMessage::decode(record) {
                        Ok(message) => saved.messages.push(message),
                        Err(_) => {
                            tracing::warn!(session = ?session, "an unreadable message record was ignored");
                        }
                    }
                }
            }
            // One copy of each seq, whatever the hash holds.
            StoredMessage::sort_by_seq(&mut saved.messages);
            saved.messages.dedup_by_key(|m| m.seq);
        }
        Ok(Some(saved))
    }

    fn claim(
        &self,
        session: &SessionId,
        claim: Claim,
    ) -> Result<Option<SavedSession>, SessionStoreError> {
        let claimed: i64 = self.with(|connection| {
            let claimed = self
                .claim_script
                .key(self.key("s", session))
                .arg(claim.0)
                .invoke(connection)
                .map_err(failed)?;
            self.wait_durable(connection)?;
            Ok(claimed)
        })?;
        if claimed == 0 {
            return Ok(None);
        }
        self.load(session)
    }

    fn commit(
        &self,
        now_wall_ms: u64,
        changes: &[Change],
    ) -> Result<Vec<SessionId>, SessionStoreError> {
        let mut args = vec![
            self.prefix.as_bytes().to_vec(),
            now_wall_ms.to_string().into_bytes(),
        ];
        for change in changes {
            encode(&mut args, change);
        }
        self.with(|connection| self.run(connection, args))
    }

    fn sweep(
        &self,
        now_wall_ms: u64,
        retention: Retention,
        live: &dyn Fn(&SessionId) -> bool,
    ) -> Result<Swept, SessionStoreError> {
        let live_key = format!("{}:live", self.prefix);
        let rec_key = format!("{}:rec", self.prefix);
        let (stale, old, records): (Vec<String>, Vec<String>, usize) = self.with(|connection| {
            redis::pipe()
                .cmd("ZRANGEBYSCORE")
                .arg(&live_key)
                .arg("-inf")
                .arg(now_wall_ms.saturating_sub(retention.session_ttl_ms))
                .cmd("ZRANGEBYSCORE")
                .arg(&rec_key)
                .arg("-inf")
                .arg(now_wall_ms.saturating_sub(retention.record_ttl_ms))
                .cmd("ZCARD")
                .arg(&rec_key)
                .query(connection)
                .map_err(failed)
        })?;
        let mut changes = Vec::new();
        let mut swept = Swept::default();
        for id in stale.iter().filter_map(|id| unhex(id)) {
            if live(&id) {
                continue;
            }
            if let Some(saved) = self.load(&id)? {
                changes.push(Change::Expire {
                    session: id,
                    state: saved.state,
                    subject: saved.subject,
                    claim: saved.claim,
                    peer: saved.peer,
                });
                swept.expired += 1;
            }
        }
        let mut removed: Vec<SessionId> = old.iter().filter_map(|id| unhex(id)).collect();
        let kept = (records + swept.expired).saturating_sub(removed.len());
        if kept > retention.max_records {
            // The oldest first; those just expired are the newest.
            let surplus = kept - retention.max_records;
            let oldest: Vec<String> = self.with(|connection| {
                redis::cmd("ZRANGE")
                    .arg(&rec_key)
                    .arg(0)
                    .arg(isize::try_from(removed.len() + surplus).unwrap_or(isize::MAX) - 1)
                    .query(connection)
                    .map_err(failed)
            })?;
            for id in oldest.iter().filter_map(|id| unhex(id)) {
                if !removed.contains(&id) {
                    removed.push(id);
                }
            }
        }
        swept.records_removed = removed.len();
        changes.extend(
            removed
                .into_iter()
                .map(|session| Change::Remove { session }),
        );
        if !changes.is_empty() {
            self.commit(now_wall_ms, &changes)?;
        }
        Ok(swept)
    }

    fn shared(&self) -> bool {
        true
    }

    fn inbox(&self, session: &SessionId, max: usize) -> Result<Inbox, SessionStoreError> {
        let last = isize::try_from(max).unwrap_or(isize::MAX) - 1;
        let items: Vec<Vec<u8>> = self.with(|connection| {
            redis::cmd("LRANGE")
                .arg(self.key("in", session))
                .arg(0)
                .arg(last)
                .query(connection)
                .map_err(failed)
        })?;
        Ok(unflag_all(items))
    }

    fn inboxes(&self, sessions: &[SessionId], max: usize) -> Result<Vec<Inbox>, SessionStoreError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let last = isize::try_from(max).unwrap_or(isize::MAX) - 1;
        let lists: Vec<Vec<Vec<u8>>> = self.with(|connection| {
            let mut pipe = redis::pipe();
            for session in sessions {
                pipe.cmd("LRANGE")
                    .arg(self.key("in", session))
                    .arg(0)
                    .arg(last);
            }
            pipe.query(connection).map_err(failed)
        })?;
        Ok(lists.into_iter().map(unflag_all).collect())
    }

    fn with_mail(&self) -> Result<Vec<SessionId>, SessionStoreError> {
        let ids: Vec<String> = self.with(|connection| {
            redis::cmd("SMEMBERS")
                .arg(format!("{}:mail", self.prefix))
                .query(connection)
                .map_err(failed)
        })?;
        Ok(ids.iter().filter_map(|id| unhex(id)).collect())
    }

    fn watch_mail(&self, on_mail: Box<dyn Fn(SessionId) -> bool + Send>) {
        let client = self.client.clone();
        let channel = format!("{}:hint", self.prefix);
        let spawned = std::thread::Builder::new()
            .name("steadfast-mail".into())
            .spawn(move || loop {
                // Subscribed until the connection fails (a killed Pub/Sub
                // connection, Redis restarting), then again; the periodic
                // with_mail check covers hints lost in between.
                if let Ok(mut connection) = client.get_connection_with_timeout(TIMEOUT) {
                    let _ = connection.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut pubsub = connection.as_pubsub();
                    if pubsub.subscribe(&channel).is_ok() {
                        loop {
                            match pubsub.get_message() {
                                Ok(message) => {
                                    let id: String = message.get_payload().unwrap_or_default();
                                    if let Some(session) = unhex(&id) {
                                        if !on_mail(session) {
                                            return;
                                        }
                                    }
                                }
                                // Quiet: still wanted? (the zero id asks).
                                Err(error) if error.is_timeout() => {
                                    if !on_mail(SessionId([0; 16])) {
                                        return;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
                // Stop when nobody listens any more.
                if !on_mail(SessionId([0; 16])) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the mail watcher thread");
        }
    }

    fn live_sessions(&self) -> Result<Vec<SessionId>, SessionStoreError> {
        let ids: Vec<String> = self.with(|connection| {
            redis::cmd("ZRANGE")
                .arg(format!("{}:live", self.prefix))
                .arg(0)
                .arg(-1)
                .query(connection)
                .map_err(failed)
        })?;
        Ok(ids.iter().filter_map(|id| unhex(id)).collect())
    }

    fn count(&self) -> Result<usize, SessionStoreError> {
        let (live, records): (usize, usize) = self.with(|connection| {
            redis::pipe()
                .cmd("ZCARD")
                .arg(format!("{}:live", self.prefix))
                .cmd("ZCARD")
                .arg(format!("{}:rec", self.prefix))
                .query(connection)
                .map_err(failed)
        })?;
        Ok(live + records)
    }
}
