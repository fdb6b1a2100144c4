"""Run a coroutine on uvloop when the optional ``fast`` extra installed it, else on asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on the fastest event loop installed."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional extra
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)  # type: ignore[no-any-return,unused-ignore]


def name() -> str:
    """Which event loop ``run`` uses, for benchmark reports."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
