"""The stream consumer the fault tests run in processes of their own.

``python -m fluid run tests._stream_targets:consumer`` builds a
``StreamConsumerWorker`` from the JSON in ``FLUID_STREAM_TEST`` (see
``Config``). Its handler records every step in Redis itself, before the ack,
so that what a SIGKILL leaves behind is exact:

* ``RPUSH <stream>:started "<n> <consumer> <pid> <monotonic>"`` when it begins;
* ``RPUSH <stream>:done "<n> <consumer> <pid> <monotonic>"`` just before it returns.

A message found in ``done`` was handled (it may be handled again: it is
acked only after the handler returned). ``time.monotonic()`` is the system's
``CLOCK_MONOTONIC``: the test process reads the same clock, so it measures
recovery times across processes. The payloads are integers.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

import fluid
import fluid.redis

CONFIG_ENV = "FLUID_STREAM_TEST"
READY = "stream-target: on_startup"
"""Printed (with the consumer's name, pid and monotonic time) from ``on_startup``."""


@dataclass
class Config:
    """What one consumer process does; the test passes it as JSON."""

    url: str
    stream: str
    group: str
    consumer: str
    concurrency: int = 1
    maxsize: int = 10
    min_idle: float = 30.0
    claim_interval: float | None = None
    max_deliveries: int = 5
    block: float = 1.0
    grace: float = 5.0
    work: float = 0.0
    """Seconds every message takes."""
    hold: bool = False
    """Every message takes an hour: only a signal ends this process's handlers."""
    crash_on: list[int] = field(default_factory=list)
    """Payloads on which the handler ends the process at once (``os._exit(7)``)."""
    poison: list[int] = field(default_factory=list)
    """Payloads on which the handler raises."""

    def dumps(self) -> str:
        return json.dumps(self.__dict__)


def record(n: int, consumer: str) -> str:
    return f"{n} {consumer} {os.getpid()} {time.monotonic():.6f}"


def parse(line: bytes | str) -> tuple[int, str, int, float]:
    """``(n, consumer, pid, monotonic)`` of a ``started`` or ``done`` record."""
    text = line.decode() if isinstance(line, bytes) else line
    n, consumer, pid, when = text.split()
    return int(n), consumer, int(pid), float(when)


class Recording(fluid.redis.StreamConsumerWorker):
    """The consumer, with a client of its own for the records (closed in ``on_shutdown``)."""

    __slots__ = ("config", "records")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.records: aioredis.Redis | None = None
        super().__init__(
            self.handle,
            name="stream-target",
            redis=config.url,
            stream=config.stream,
            group=config.group,
            consumer=config.consumer,
            concurrency=config.concurrency,
            maxsize=config.maxsize,
            min_idle=config.min_idle,
            claim_interval=config.claim_interval,
            max_deliveries=config.max_deliveries,
            block=config.block,
            stopping_grace_period=config.grace,
        )

    async def on_startup(self) -> None:
        self.records = aioredis.Redis.from_url(self.config.url)
        print(f"{READY} {self.config.consumer} {os.getpid()} {time.monotonic():.6f}", flush=True)

    async def on_shutdown(self) -> None:
        if self.records is not None:
            await self.records.aclose()

    async def handle(self, n: Any) -> None:
        config = self.config
        records = self.records
        assert records is not None
        await records.rpush(f"{config.stream}:started", record(n, config.consumer))
        if n in config.crash_on:
            os._exit(7)
        if n in config.poison:
            raise ValueError(f"poison {n}")
        if config.hold:
            await asyncio.sleep(3600)
        elif config.work:
            await asyncio.sleep(config.work)
        await records.rpush(f"{config.stream}:done", record(n, config.consumer))


def consumer() -> Recording:
    """The target: a consumer configured by ``FLUID_STREAM_TEST``."""
    return Recording(Config(**json.loads(os.environ[CONFIG_ENV])))
