"""API keys, scopes, tenants and per-key rate limits.

A key looks like ``gk_<prefix>_<secret>``. It is shown once, when created; the store keeps only
the prefix (to find the row) and a SHA-256 of the whole key (to check it), the way R2R and Onyx
store theirs: a key is 256 random bits, so a fast hash is safe where a password would need a slow
one. Each key belongs to one tenant and has scopes:

- ``read``: search, answers, chat completions, collections and document sources;
- ``ingest``: ingest and delete documents (and read document sources, for ``--prune``);
- ``admin``: everything, plus dropping collections and ``/metrics``.

The store is a SQLite file (``<data_dir>/keys.sqlite`` unless ``GROUNDED_KEYS_DB``), so
``grounded keys create`` works while ``grounded serve`` runs, and a revoked key stops working on
its next request; API replicas share one Redis store instead (``GROUNDED_KEYS_URL``). Rate limits
use the ``limits`` library (moving window) in memory per process, or in Redis shared by every
replica (``GROUNDED_RATE_LIMIT_STORAGE``).

Example::

    store = KeyStore(Path("data/keys.sqlite"))
    token, record = store.create("acme", {"read"}, name="web app")
    principal = Authenticator(store, enabled=True).authenticate(f"Bearer {token}")
    principal.tenant  # "acme"
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ingest.names import DEFAULT_TENANT, check_tenant

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

SCOPES = ("read", "ingest", "admin")
_PREFIX = "gk"


class AuthError(Exception):
    """Base of the errors that mean 'this request may not proceed'."""


class Unauthenticated(AuthError):
    """No key, or a key that is unknown or revoked (401)."""


class Forbidden(AuthError):
    """A valid key without the scope the operation needs (403)."""


class RateLimited(AuthError):
    """The key spent its request budget (429); ``retry_after`` is in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class KeyRecord:
    prefix: str
    tenant: str
    scopes: frozenset[str]
    name: str
    created_at: str
    revoked_at: str | None = None
    rate_limit: str | None = None  # None = the service's default

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant whose data they may touch, and what they may do."""

    tenant: str
    scopes: frozenset[str]
    key_prefix: str | None = None  # None when auth is off
    rate_limit: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @property
    def visible_tenant(self) -> str | None:
        """Whose collections this caller may list: its tenant, or every tenant's (None) for an
        admin — which is also the caller when auth is off."""
        return None if "admin" in self.scopes else self.tenant


ANONYMOUS = Principal(DEFAULT_TENANT, frozenset(SCOPES))
"""The caller when auth is off (loopback quickstart): the default tenant, every scope."""


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = chosen - set(SCOPES)
    if unknown or not chosen:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {sorted(chosen)}")
    return chosen


def check_rate(rate: str) -> str:
    """A ``limits`` rate string such as ``600/minute`` or ``10/second``."""
    try:
        parse(rate)
    except ValueError:
        message = f"invalid rate limit {rate!r}: use e.g. '600/minute' or '10/second'"
        raise ValueError(message) from None
    return rate


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class ApiKeyStore(Protocol):
    def create(
        self,
        tenant: str,
        scopes: Iterable[str],
        *,
        name: str = "",
        rate_limit: str | None = None,
    ) -> tuple[str, KeyRecord]: ...

    def list(self) -> list[KeyRecord]: ...

    def revoke(self, prefix: str) -> bool: ...

    def has_active_keys(self) -> bool: ...

    def lookup(self, token: str) -> KeyRecord | None: ...

    def close(self) -> None: ...


def _new_key(
    tenant: str, scopes: Iterable[str], name: str, rate_limit: str | None
) -> tuple[str, KeyRecord]:
    record = KeyRecord(
        prefix=secrets.token_hex(4),
        tenant=check_tenant(tenant),
        scopes=check_scopes(scopes),
        name=name,
        created_at=_now(),
        rate_limit=check_rate(rate_limit) if rate_limit else None,
    )
    return f"{_PREFIX}_{record.prefix}_{secrets.token_urlsafe(32)}", record


def _prefix_of(token: str) -> str | None:
    parts = token.split("_", 2)
    return parts[1] if len(parts) == 3 and parts[0] == _PREFIX else None


class KeyStore:
    """API keys in a SQLite file; safe to use from several threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS api_keys ("
                " prefix TEXT PRIMARY KEY, digest TEXT NOT NULL, tenant TEXT NOT NULL,"
                " scopes TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
                " created_at TEXT NOT NULL, revoked_at TEXT, rate_limit TEXT)"
            )

    def _db(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not cross threads.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def create(
        self,
        tenant: str,
        scopes: Iterable[str],
        *,
        name: str = "",
        rate_limit: str | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key for ``tenant``; returns the token (shown once) and its record."""
        token, record = _new_key(tenant, scopes, name, rate_limit)
        with self._db() as db:
            db.execute(
                "INSERT INTO api_keys (prefix, digest, tenant, scopes, name, created_at,"
                " rate_limit) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.prefix,
                    _digest(token),
                    record.tenant,
                    ",".join(sorted(record.scopes)),
                    name,
                    record.created_at,
                    record.rate_limit,
                ),
            )
        return token, record

    def list(self) -> list[KeyRecord]:
        rows = self._db().execute(
            "SELECT prefix, tenant, scopes, name, created_at, revoked_at, rate_limit"
            " FROM api_keys ORDER BY created_at, prefix"
        )
        return [_record(row) for row in rows]

    def revoke(self, prefix: str) -> bool:
        """Revoke the key with ``prefix``; False when there is no such active key."""
        with self._db() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                (_now(), prefix),
            )
        return cursor.rowcount == 1

    def has_active_keys(self) -> bool:
        row = self._db().execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1")
        return row.fetchone() is not None

    def lookup(self, token: str) -> KeyRecord | None:
        """The active key whose token this is, or None."""
        prefix = _prefix_of(token)
        if prefix is None:
            return None
        row = (
            self._db()
            .execute(
                "SELECT prefix, tenant, scopes, name, created_at, revoked_at, rate_limit, digest"
                " FROM api_keys WHERE prefix = ?",
                (prefix,),
            )
            .fetchone()
        )
        if row is None or not hmac.compare_digest(row[7], _digest(token)):
            return None
        record = _record(row[:7])
        return record if record.active else None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _record(row: tuple[object, ...]) -> KeyRecord:
    prefix, tenant, scopes, name, created, revoked, rate = row
    return KeyRecord(
        prefix=str(prefix),
        tenant=str(tenant),
        scopes=frozenset(str(scopes).split(",")),
        name=str(name),
        created_at=str(created),
        revoked_at=str(revoked) if revoked else None,
        rate_limit=str(rate) if rate else None,
    )


_RECORD_FIELDS = ("prefix", "tenant", "scopes", "name", "created_at", "revoked_at", "rate_limit")
"""The columns :func:`_record` reads, in its order."""


class RedisKeyStore:
    """API keys in Redis, shared by every API replica: a hash ``<prefix>key:<id>`` per key (with
    the SHA-256 of the token, never the token) and a set ``<prefix>keys`` of their ids."""

    def __init__(self, url: str, prefix: str = "grounded:") -> None:
        import redis

        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5
        )
        self._prefix = prefix

    def _key(self, key_prefix: str) -> str:
        return f"{self._prefix}key:{key_prefix}"

    def create(
        self,
        tenant: str,
        scopes: Iterable[str],
        *,
        name: str = "",
        rate_limit: str | None = None,
    ) -> tuple[str, KeyRecord]:
        while True:
            token, record = _new_key(tenant, scopes, name, rate_limit)
            key = self._key(record.prefix)
            # HSETNX claims the prefix: two keys that drew the same 32-bit prefix must not
            # overwrite each other (SQLite's primary key refuses the second the same way).
            if self._redis.hsetnx(key, "digest", _digest(token)):
                break
        fields: dict[FieldT, EncodableT] = {
            k: v for k, v in asdict(record).items() if v is not None
        }
        fields["scopes"] = ",".join(sorted(record.scopes))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.sadd(f"{self._prefix}keys", record.prefix)
        pipe.execute()
        return token, record

    def _get(self, key_prefix: str) -> tuple[KeyRecord, str] | None:
        fields = self._redis.hgetall(self._key(key_prefix))
        if not fields:
            return None
        record = _record(tuple(fields.get(f) for f in _RECORD_FIELDS))
        return record, str(fields["digest"])

    def list(self) -> list[KeyRecord]:
        found = [self._get(str(p)) for p in self._redis.smembers(f"{self._prefix}keys")]
        return sorted((r for r, _ in filter(None, found)), key=lambda r: (r.created_at, r.prefix))

    def revoke(self, prefix: str) -> bool:
        key = self._key(prefix)
        # HSETNX: only the first revoke sets the time, so a second one reports False.
        return bool(self._redis.exists(key)) and bool(self._redis.hsetnx(key, "revoked_at", _now()))

    def has_active_keys(self) -> bool:
        return any(r.active for r in self.list())

    def lookup(self, token: str) -> KeyRecord | None:
        prefix = _prefix_of(token)
        found = self._get(prefix) if prefix else None
        if found is None or not hmac.compare_digest(found[1], _digest(token)):
            return None
        return found[0] if found[0].active else None

    def close(self) -> None:
        self._redis.close()


def open_key_store(keys_url: str | None, keys_path: Path) -> ApiKeyStore:
    """Redis when ``keys_url`` is set (API replicas share it), else the SQLite file."""
    return RedisKeyStore(keys_url) if keys_url else KeyStore(keys_path)


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or refuses.

    Args:
        store: the key store; unused when ``enabled`` is False.
        enabled: False serves everyone as :data:`ANONYMOUS` (loopback quickstart).
        default_rate: per-key limit for keys without their own (``limits`` syntax).
        rate_storage: where the counters live (a ``limits`` storage URI): ``memory://`` per
            process, ``redis://…`` shared by every replica.
    """

    def __init__(
        self,
        store: ApiKeyStore | None,
        *,
        enabled: bool,
        default_rate: str = "600/minute",
        rate_storage: str = "memory://",
    ) -> None:
        if enabled and store is None:
            raise ValueError("auth is on but no key store was given")
        self.store = store
        self.enabled = enabled
        self.default_rate = check_rate(default_rate)
        self._limiter = MovingWindowRateLimiter(storage_from_string(rate_storage))
        self._rates: dict[str, RateLimitItem] = {}

    def authenticate(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """``Authorization: Bearer <key>`` (or an ``X-API-Key`` header) → who is calling."""
        if not self.enabled:
            return ANONYMOUS
        token = api_key
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthenticated("use 'Authorization: Bearer <API key>'")
            token = value.strip()
        if not token:
            raise Unauthenticated("an API key is required: 'Authorization: Bearer <API key>'")
        assert self.store is not None
        record = self.store.lookup(token)
        if record is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return Principal(record.tenant, record.scopes, record.prefix, record.rate_limit)

    def authorize(self, principal: Principal, scopes: tuple[str, ...], operation: str) -> None:
        """Refuse (403) a principal with none of ``scopes``, then spend one unit of its rate
        limit."""
        if not any(principal.allows(scope) for scope in scopes):
            have = ", ".join(sorted(principal.scopes))
            need = " or ".join(repr(s) for s in scopes)
            raise Forbidden(f"{operation} needs the {need} scope; this key has: {have}")
        if principal.key_prefix is not None:
            self._spend(principal)

    def _spend(self, principal: Principal) -> None:
        rate = principal.rate_limit or self.default_rate
        item = self._rates.get(rate)
        if item is None:
            item = self._rates[rate] = parse(rate)
        key = principal.key_prefix or ""
        if not self._limiter.hit(item, key):
            reset, _remaining = self._limiter.get_window_stats(item, key)
            wait = max(1, int(reset - dt.datetime.now(dt.UTC).timestamp() + 0.999))
            raise RateLimited(f"rate limit of {rate} for this key exceeded", wait)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
