"""Key-value stores shared by every worker and instance: Redis, or an embedded on-disk store.

The response cache and the Responses API's conversations live here, so nothing that must be
shared stays in one process's memory. ``open_store(redis_url, directory)`` picks Redis when a
URL is given (the ``redis`` package), else ``diskcache`` (SQLite on disk, safe for several
processes on one machine). Keys are namespaced (``optillm:`` by default); values are bytes.
"""

from __future__ import annotations

import os
from typing import Protocol


class StoreError(RuntimeError):
    """The store cannot be opened (missing package, unreachable server)."""


class KVStore(Protocol):
    """Bytes by string key, with an optional time to live in seconds."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self, prefix: str = "") -> int:
        """Remove every key starting with ``prefix``; returns how many were removed."""
        ...

    def close(self) -> None: ...


class RedisStore:
    """A Redis-backed store (``redis://host:port/db``)."""

    def __init__(self, url: str, namespace: str = "optillm:"):
        try:
            import redis
        except ImportError:
            raise StoreError("redis_url is set but the 'redis' package is missing: "
                             "pip install 'optillm[gateway]'") from None
        self.ns = namespace
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise StoreError(f"cannot reach Redis at {url}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        return self.client.get(self.ns + key)

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if ttl:
            self.client.set(self.ns + key, value, px=max(1, int(ttl * 1000)))
        else:
            self.client.set(self.ns + key, value)

    def delete(self, key: str) -> None:
        self.client.delete(self.ns + key)

    def clear(self, prefix: str = "") -> int:
        removed = 0
        batch = []
        for key in self.client.scan_iter(match=f"{self.ns}{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += self.client.delete(*batch)
                batch.clear()
        if batch:
            removed += self.client.delete(*batch)
        return removed

    def close(self) -> None:
        self.client.close()


class DiskStore:
    """An embedded store on disk (``diskcache``: SQLite, shared by processes on one host)."""

    def __init__(self, directory: str, namespace: str = "optillm:"):
        try:
            import diskcache
        except ImportError:
            raise StoreError("the embedded cache store needs the 'diskcache' package: "
                             "pip install 'optillm[gateway]'") from None
        self.ns = namespace
        self.cache = diskcache.Cache(os.path.expanduser(directory), timeout=5)

    def get(self, key: str) -> bytes | None:
        value = self.cache.get(self.ns + key)
        return bytes(value) if value is not None else None

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.cache.set(self.ns + key, value, expire=ttl or None)

    def delete(self, key: str) -> None:
        self.cache.delete(self.ns + key)

    def clear(self, prefix: str = "") -> int:
        full = self.ns + prefix
        removed = 0
        for key in list(self.cache.iterkeys()):
            if isinstance(key, str) and key.startswith(full) and self.cache.delete(key):
                removed += 1
        return removed

    def close(self) -> None:
        self.cache.close()


def open_store(redis_url: str | None, directory: str) -> KVStore:
    """Redis when ``redis_url`` is set, else the on-disk store under ``directory``.

    Raises: StoreError.
    """
    if redis_url:
        return RedisStore(redis_url)
    return DiskStore(directory)


class LazyStore:
    """A store opened on first use (so an app that never caches or stores responses touches
    neither Redis nor the disk). Thread-safe; the same interface as ``KVStore``."""

    def __init__(self, redis_url: str | None, directory: str):
        import threading

        self.redis_url = redis_url
        self.directory = directory
        self._store: KVStore | None = None
        self._lock = threading.Lock()

    @property
    def backend(self) -> KVStore:
        """The opened store. Raises: StoreError."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self.redis_url, self.directory)
        return self._store

    def get(self, key: str) -> bytes | None:
        return self.backend.get(key)

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.backend.set(key, value, ttl)

    def delete(self, key: str) -> None:
        self.backend.delete(key)

    def clear(self, prefix: str = "") -> int:
        return self.backend.clear(prefix)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
