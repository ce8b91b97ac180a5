"""The app's bounded executor for fan-out of independent upstream calls.

Approaches nest fan-outs (``|`` runs approaches in parallel, each of which samples in
parallel, each of which may emulate ``n``). A plain bounded pool deadlocks when every worker
waits on work queued behind it, so ``map`` lets the waiting thread run any item that no worker
has started yet ("caller runs"): concurrency stays bounded by the pool size plus the callers,
and no wait can block forever on a queued task.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class BoundedExecutor:
    """A thread pool of ``max_workers`` threads with a deadlock-free ``map``."""

    def __init__(self, max_workers: int, name: str = "optillm"):
        self.max_workers = max_workers
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    def submit(self, fn: Callable[..., R], *args, **kwargs) -> cf.Future:
        ctx = contextvars.copy_context()
        return self._pool.submit(ctx.run, fn, *args, **kwargs)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]``, run concurrently; results in input order.

        The first exception raised by any item is re-raised after every started item
        has finished (no call is left running unobserved).
        """
        items = list(items)
        if not items:
            return []
        if len(items) == 1:
            return [fn(items[0])]
        futures = [self.submit(fn, x) for x in items[1:]]
        results: list = [None] * len(items)
        errors: list[BaseException] = []
        try:
            results[0] = fn(items[0])
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
            errors.append(exc)
        for i, fut in enumerate(futures, start=1):
            if fut.cancel():  # nobody started it: run it here rather than wait for a worker
                try:
                    results[i] = fn(items[i])
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                continue
            try:
                results[i] = fut.result()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]
        return results

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
