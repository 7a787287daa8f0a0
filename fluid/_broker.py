"""The broker side of a stream consumer: what a backend must do, and nothing more.

``StreamConsumer`` (``fluid/_stream.py``) holds the consumer's semantics:
its buffer, acks, renewals, dead letters and stop. A backend only moves
entries: Redis Streams consumer groups today (``fluid/redis``), NATS
JetStream or another log with per-consumer pending lists later. It is a
protocol of its own so that a second backend changes no consumer code.

Every method raises ``ConnectionError`` (or another ``OSError``, such as
``TimeoutError``) when the broker is unreachable, whatever its client
raises: the consumer reports it, backs off and tries again; it never loses
an entry for it (an entry is only gone once acked or dead-lettered).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Broker", "BrokerFigures", "Entry"]


@dataclass(slots=True)
class Entry:
    """One entry of a stream as a consumer holds it.

    Attributes:
        id: the broker's id of the entry (Redis: ``"1700000000000-0"``).
        data: the decoded payload, what the handler gets.
        deliveries: how many times a handler got it, this time included.
    """

    id: str
    data: Any
    deliveries: int = 1
    recovered: bool = False
    """Read again (own pending) or claimed: the broker has not counted this
    delivery yet; ``count_delivery`` does, just before the handler starts."""
    raw: Any = None
    """The backend's own form of the entry (Redis: its fields), for its dead letter."""
    problem: str | None = None
    """Why no handler can take it (a payload that does not decode): dead-lettered."""


@dataclass(slots=True)
class BrokerFigures:
    """What the broker says about a consumer and its group (for ``status()``)."""

    own_pending: int
    """Entries delivered to this consumer and not acked yet (broker side)."""
    lag: int | None
    """Entries of the stream the group has not read yet, if the broker knows."""


class Broker(Protocol):
    """A consumer group on a stream, as one named consumer of it sees it."""

    @property
    def stream(self) -> str:
        """The stream's name."""
        ...

    @property
    def group(self) -> str:
        """The consumer group's name."""
        ...

    @property
    def consumer(self) -> str:
        """This consumer's name in the group: stable across restarts of the process."""
        ...

    async def open(self) -> None:
        """Connect and make sure the stream and the group exist."""
        ...

    async def close(self) -> None:
        """Close the connections (the group and the pending entries stay)."""
        ...

    async def read_new(self, count: int, block: float) -> list[Entry]:
        """Up to ``count`` entries no consumer of the group was given yet.

        Waits up to ``block`` seconds for one. Cancelling the call is how the
        consumer stops reading: an entry delivered in a cancelled read stays
        pending for this consumer and is found by ``read_own`` or ``claim_idle``.
        """
        ...

    async def read_own(self, count: int, after: str) -> tuple[list[Entry], str | None]:
        """Up to ``count`` entries pending for this consumer, ids after ``after``.

        What a consumer of this name was given and never acked: read at
        start, so that a process restarted under the same name resumes its
        work at once. ``after="0"`` starts from the beginning. Returns the
        entries (``recovered``) and the cursor of the next call, None once
        the list is read: not the last entry's id, since a batch may hold
        only entries trimmed away meanwhile.
        """
        ...

    async def claim_idle(self, min_idle: float, count: int) -> list[Entry]:
        """Take up to ``count`` entries idle for ``min_idle`` seconds from any consumer.

        The entries of a consumer that died, or released with ``release``;
        ``recovered``: taking them counts no delivery.
        """
        ...

    async def count_delivery(self, entry: Entry) -> None:
        """Count a delivery of a ``recovered`` entry: its handler starts now.

        Counted when a handler starts, not when the entry is read: the
        entries buffered behind one that crashes the process are not
        dead-lettered with it.
        """
        ...

    async def ack(self, ids: Sequence[str]) -> None:
        """Done with these entries: the broker forgets them."""
        ...

    async def renew(self, ids: Sequence[str], min_idle: float) -> None:
        """Still working on these: reset their idle time so no peer claims them.

        Only entries idle for at least ``min_idle`` seconds are touched.
        """
        ...

    async def release(self, ids: Sequence[str], delay: float, min_idle: float) -> None:
        """Give these entries up: any consumer may claim them ``delay`` seconds from now.

        ``min_idle`` is the idle time at which peers claim (``claim_idle``).
        They leave this consumer's pending list: ``read_own`` no longer sees
        them, so a restart does not cut their delay short. Releasing again
        (``delay=min_idle``) keeps a long delay from running out.
        """
        ...

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move ``entry`` to the dead letters with ``reason``, then ack it.

        Atomic: if the dead letter cannot be written, the entry is not acked.
        """
        ...

    async def pending_ids(self, count: int) -> list[str]:
        """Up to ``count`` ids pending for this consumer (broker side)."""
        ...

    async def figures(self) -> BrokerFigures:
        """This consumer's pending count and its group's lag."""
        ...


def describe(error: BaseException) -> str:
    """A one-line reason for a dead letter: the error's type and message."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
