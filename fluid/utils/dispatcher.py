"""Dispatchers at their earlier import path: ``from fluid.utils.dispatcher import Event``."""

from __future__ import annotations

from .._dispatcher import AsyncDispatcher, BaseDispatcher, Dispatcher, Event

__all__ = ["AsyncDispatcher", "BaseDispatcher", "Dispatcher", "Event"]
