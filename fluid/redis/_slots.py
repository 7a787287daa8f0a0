"""RedisSlotClaim: a schedule's slot claimed with one ``SET key owner NX PX ttl``.

Why it is shaped this way:

* One command per slot and replica, no script, no lock to release: ``NX``
  makes the first ``SET`` of a key the only one that succeeds, ``PX`` lets
  the key go by itself once no replica can claim its slot any more (the
  schedule picks the ttl, see ``fluid._claim``).
* The value is the replica's name (host and pid by default): ``GET`` on a
  slot's key says who ran it, which is what one asks when a job ran twice or
  not at all.
* Given a URL, the claim owns its client: made at the first claim, on the
  running loop, and closed when a worker using it stops. Several workers may
  share it: a claim still waiting for its answer keeps the client open until
  it has it, and the next claim after a close makes a new client. A client
  given by the user is used as it is and never closed here.
* A URL-made client retries a failed command once, at once: that carries a
  claim over a connection the server dropped (a restart), and a claim to a
  server that is down fails fast, so the schedule skips the slot and goes on.
"""

from __future__ import annotations

import math
import os
import socket

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["RedisSlotClaim"]


class RedisSlotClaim:
    """Run each slot of a schedule once across replicas, claimed in Redis.

    Give it as ``claim=`` to a [`ScheduledWorker`][fluid.ScheduledWorker] of
    every replica: before a slot runs, each replica sends ``SET key owner NX
    PX ttl``, and the one that set the key runs the slot. The key is
    ``prefix`` + the schedule's name + the slot's time in milliseconds since
    the epoch, e.g. ``fluid:slot:report:1735689600000``.

    Args:
        redis: a ``redis://`` URL (the claim makes its client and closes it
            when a worker using it stops) or a ``redis.asyncio.Redis``
            client (used as given, never closed by fluid).
        prefix: the start of every key.
        owner: the value stored in a claimed key, naming the replica that
            runs the slot; ``host:pid`` by default.

    Raises:
        TypeError: ``redis`` is neither a string nor a ``redis.asyncio.Redis``,
            or ``prefix`` or ``owner`` is not a string.

    Example:
        ```python
        import fluid
        from fluid.redis import RedisSlotClaim

        claim = RedisSlotClaim("redis://redis:6379/0")

        @fluid.scheduled(cron="0 6 * * *", claim=claim)
        async def morning_report() -> None:  # once a day in the whole cluster
            ...
        ```
    """

    __slots__ = ("_busy", "_client", "_owner", "_prefix", "_stale", "_url")

    def __init__(self, redis: str | Redis, *, prefix: str = "fluid:slot:", owner: str = "") -> None:
        if isinstance(redis, str):
            self._url: str | None = redis
            self._client: Redis | None = None
        elif isinstance(redis, Redis):
            self._url = None
            self._client = redis
        else:
            raise TypeError(f"redis must be a URL or a redis.asyncio.Redis client, got {redis!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {prefix!r}")
        if not isinstance(owner, str):
            raise TypeError(f"owner must be a string, got {owner!r}")
        self._prefix = prefix
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._busy = 0  # claims waiting for their answer
        self._stale: list[Redis] = []  # closed clients still in use by a claim

    def __repr__(self) -> str:
        return f"RedisSlotClaim(prefix={self._prefix!r}, owner={self._owner!r})"

    @property
    def owner(self) -> str:
        """The value stored in the keys this replica claims."""
        return self._owner

    @property
    def prefix(self) -> str:
        """The start of every key."""
        return self._prefix

    async def claim(self, key: str, ttl: float) -> bool:
        """``SET prefix+key owner NX PX ttl``: True if this call set the key.

        Raises:
            redis.exceptions.RedisError: the server could not be reached or
                refused the command; the schedule skips the slot.
        """
        client = self._client
        if client is None:
            assert self._url is not None
            client = self._client = Redis.from_url(self._url, retry=Retry(NoBackoff(), 1))
        self._busy += 1
        try:
            px = max(1, math.ceil(ttl * 1000))
            return bool(await client.set(self._prefix + key, self._owner, nx=True, px=px))
        finally:
            self._busy -= 1
            if self._stale and not self._busy:
                stale, self._stale = self._stale, []
                for old in stale:
                    await old.aclose()

    async def aclose(self) -> None:
        """Close the client made from the URL (a given client is left open).

        A worker using the claim awaits this when it stops. A claim waiting
        for its answer keeps the client until it has it; a claim made after
        this makes a new client.
        """
        client = self._client
        if self._url is None or client is None:
            return
        self._client = None
        if self._busy:
            self._stale.append(client)
        else:
            await client.aclose()
