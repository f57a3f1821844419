"""``redis://``: leased locks with fencing tokens on one Redis node.

A lock is the key ``<prefix>lock:<name>`` holding JSON ``{owner, token, actor, acquired_at}``, set
with ``NX PX <lease>``, so Redis itself expires a lease whose holder stopped renewing. The fencing
token comes from ``INCR <prefix>lock-token:<name>``, which is never reset or expired, so tokens for
a name strictly increase for as long as the Redis data survives. Every operation is one Lua script:
Redis runs a script atomically, which is what makes "look at the holder, then change it" safe
without a second round trip, and makes each call safe to retry after a dropped connection
(acquire is re-entrant for its owner, renew and release compare owner and token). Times come from
the Redis server's ``TIME``, so hosts' clocks may disagree without shortening anyone's lease.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlunsplit

import redis

from runbook.errors import ConfigError, LeaseLost, LockError
from runbook.locks.base import Lease
from runbook.urls import parse_url, redact_url

DEFAULT_PREFIX = "runbook:"

# KEYS: lock key, token key. ARGV: owner, actor, lease ms.
# Returns {value, pttl, server time in ms} when the lock is (now) ours, false when it is not.
_ACQUIRE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, held = pcall(cjson.decode, cur)
  if ok and type(held) == 'table' and held.owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {cur, redis.call('PTTL', KEYS[1]), now_ms}
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
local value = '{"owner":' .. cjson.encode(ARGV[1]) .. ',"token":' .. string.format('%d', token)
  .. ',"actor":' .. cjson.encode(ARGV[2]) .. ',"acquired_at":'
  .. string.format('%.3f', now_ms / 1000) .. '}'
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[3])
return {value, tonumber(ARGV[3]), now_ms}
"""

# KEYS: lock key. ARGV: owner, token, lease ms. Returns {value, pttl, now} or {current-or-false}.
_RENEW = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('GET', KEYS[1])
if not cur then return {false} end
local ok, held = pcall(cjson.decode, cur)
if ok and type(held) == 'table' and held.owner == ARGV[1] and held.token == tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {cur, redis.call('PTTL', KEYS[1]), now_ms}
end
return {cur}
"""

# KEYS: lock key. ARGV: owner, token. Deletes only our own lease.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, held = pcall(cjson.decode, cur)
if ok and type(held) == 'table' and held.owner == ARGV[1] and held.token == tonumber(ARGV[2]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lock key. Returns {value, pttl, now} or false.
_HOLDER = """
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
local t = redis.call('TIME')
return {cur, redis.call('PTTL', KEYS[1]), tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisLocks:
    def __init__(self, url: str) -> None:
        self.url = url
        self._safe_url = redact_url(url)
        parts = parse_url(url, "lock").parts
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.prefix = options.pop("prefix", DEFAULT_PREFIX)
        options.setdefault("socket_timeout", "5")
        options.setdefault("socket_connect_timeout", "5")
        client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(options), ""))
        try:
            self._redis = redis.Redis.from_url(client_url)
        except ValueError as exc:
            raise ConfigError(f"{self._safe_url}: {exc}") from None
        self._password = parts.password or options.get("password")
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._holder = self._redis.register_script(_HOLDER)

    def __repr__(self) -> str:
        return f"RedisLocks({self._safe_url!r})"

    def _key(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def _token_key(self, name: str) -> str:
        return f"{self.prefix}lock-token:{name}"

    def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            message = str(exc) or type(exc).__name__
            if self._password:
                message = message.replace(self._password, "***")
            raise LockError(f"Redis lock provider {self._safe_url}: {doing}: {message}") from None

    def _lease(self, name: str, reply: Any) -> Lease:
        value, pttl, now_ms = reply
        held = json.loads(value)
        now = int(now_ms) / 1000
        return Lease(
            name=name,
            owner=held["owner"],
            token=int(held["token"]),
            actor=held.get("actor", ""),
            acquired_at=float(held["acquired_at"]),
            expires_at=now + max(int(pttl), 0) / 1000,
        )

    def acquire(self, name: str, owner: str, *, actor: str, lease: float) -> Lease | None:
        reply = self._call(
            f"acquire lock {name!r}",
            self._acquire,
            keys=[self._key(name), self._token_key(name)],
            args=[owner, actor, max(1, round(lease * 1000))],
        )
        return self._lease(name, reply) if reply else None

    def renew(self, lease: Lease, seconds: float) -> Lease:
        reply = self._call(
            f"renew lock {lease.name!r}",
            self._renew,
            keys=[self._key(lease.name)],
            args=[lease.owner, lease.token, max(1, round(seconds * 1000))],
        )
        if len(reply) == 3:
            return self._lease(lease.name, reply)
        by = ""
        if reply[0]:
            try:
                now = json.loads(reply[0])
                by = f"; now held by run {now['owner']} with token {now['token']}"
            except (ValueError, KeyError, TypeError):
                by = "; the key now holds something runbook did not write"
        raise LeaseLost(
            f"lease on lock {lease.name!r} (token {lease.token}) was lost: it "
            f"expired or was taken over{by}"
        )

    def release(self, lease: Lease) -> None:
        self._call(
            f"release lock {lease.name!r}",
            self._release,
            keys=[self._key(lease.name)],
            args=[lease.owner, lease.token],
        )

    def holder(self, name: str) -> Lease | None:
        reply = self._call(f"read lock {name!r}", self._holder, keys=[self._key(name)])
        if not reply:
            return None
        try:
            return self._lease(name, reply)
        except (ValueError, KeyError, TypeError):
            raise LockError(
                f"Redis lock provider {self._safe_url}: key {self._key(name)!r} "
                "does not hold a runbook lease"
            ) from None

    def held(self) -> list[Lease]:
        start = len(f"{self.prefix}lock:")
        pattern = _glob_escape(self.prefix) + "lock:*"
        keys = self._call(
            "list locks", lambda: list(self._redis.scan_iter(match=pattern, count=500))
        )
        leases = []
        for key in sorted(k.decode() if isinstance(k, bytes) else k for k in keys):
            lease = self.holder(key[start:])
            if lease is not None:
                leases.append(lease)
        return leases

    def close(self) -> None:
        self._redis.close()
