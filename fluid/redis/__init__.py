"""fluid on Redis: stream consumers across processes and machines, once-per-cluster slots.

Needs redis-py 5 or later (``pip install 'fluid-workers[redis]'``); the core
``fluid`` package never imports this module, so it keeps its small
dependency set.

* [`StreamProducer`][fluid.redis.StreamProducer] appends messages to a
  Redis stream (``XADD``).
* [`StreamConsumerWorker`][fluid.redis.StreamConsumerWorker] consumes a
  stream as one member of a consumer group: a fluid worker in every respect
  (concurrency, a bounded buffer, ``on_error``, status, supervision), at
  least once, with crash recovery, dead letters and a graceful release of
  what it could not handle.
* [`RedisSlotClaim`][fluid.redis.RedisSlotClaim] makes each slot of a
  [`ScheduledWorker`][fluid.ScheduledWorker] run once across every replica.
"""

from __future__ import annotations

try:
    import redis.asyncio  # noqa: F401 - checked here, used by the modules below
except ImportError as exc:  # one sentence naming the extra, not a bare ModuleNotFoundError
    raise ImportError(
        "fluid.redis needs redis-py 5 or later: pip install 'fluid-workers[redis]'"
    ) from exc

from ._slots import RedisSlotClaim
from ._streams import JsonSerializer, Retry, Serializer, StreamConsumerWorker, StreamProducer

__all__ = [
    "JsonSerializer",
    "RedisSlotClaim",
    "Retry",
    "Serializer",
    "StreamConsumerWorker",
    "StreamProducer",
]
