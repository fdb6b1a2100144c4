"""Every task, queue and thread of a run is made here (``tests/test_house.py`` checks that no
other module makes one), so a reader finds in one file what runs at the same time.

Tasks are structured: they live in a ``group`` (an ``asyncio.TaskGroup``), so the first one
to fail cancels its siblings and the group raises that failure itself (not an exception
group: callers catch our errors by type). Blocking work goes to a thread: ``in_thread`` (the
loop's executor, joined when the loop closes) or ``in_daemon_thread`` (one that never holds
up the process's exit: a read blocked on a pipe); ``start_thread`` for a thread that runs
beside the loop (a lease's renewal). Parquet is written by one writer task per phase — the
collection's chunks (``workers_and_writer``), the listing's inventory (``OneWriter``) — never
by two at once.

    workers_and_writer:  lines ─(daemon thread)─> feed ─> N workers ─> [results] ─> writer
                         (progress beside)                 ─(thread)─> commit(chunk)

    OneWriter:  listing ─┐
                listing ─┼─(pages)─> [queue] ─> writer ─(thread)─> commit(chunk)
                listing ─┘                       one at a time, in order
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")
Queue = asyncio.Queue  # the type of ``queue()``'s queues, for annotations


def queue(maxsize: int = 0) -> asyncio.Queue[Any]:
    """A bounded queue between tasks of one group (``maxsize`` 0: unbounded)."""
    return asyncio.Queue(maxsize=maxsize)


@contextlib.asynccontextmanager
async def group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` whose first failure cancels the rest and is raised as itself
    (the first of them, when siblings failed too as they were cancelled)."""
    try:
        async with asyncio.TaskGroup() as tasks:
            yield tasks
    except BaseExceptionGroup as failures:
        raise _first(failures) from None


def _first(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf failure, keeping its own traceback and cause."""
    first = failures.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def all_of(coros: Iterable[Coroutine[Any, Any, T]], at_once: int) -> list[T]:
    """Each coroutine's result, in order, at most ``at_once`` running; one raising cancels
    the others at once and is raised."""
    gate = asyncio.Semaphore(at_once)

    async def gated(coro: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await coro

    async with group() as tasks:
        started = [tasks.create_task(gated(coro)) for coro in coros]
    return [task.result() for task in started]


async def in_thread(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``work(*args, **kwargs)`` in the loop's executor, off the event loop."""
    return await asyncio.to_thread(work, *args, **kwargs)


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """``work()`` in a thread of its own that never holds up the process's exit.

    Why not ``asyncio.to_thread``: its executor is joined when the event loop closes, so a
    read blocked on a pipe that never ends (stdin) would keep a stopped run from exiting.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, failure: BaseException | None) -> None:
        if done.cancelled():
            return
        if failure is not None:
            done.set_exception(failure)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    start_thread(run, "cph-input")
    return await done


def start_thread(target: Callable[[], object], name: str,
                 daemon: bool = True) -> threading.Thread:
    """``target()`` in a new thread, started; the caller joins it if it must."""
    thread = threading.Thread(target=target, name=name, daemon=daemon)
    thread.start()
    return thread


@contextlib.asynccontextmanager
async def alongside(work: Coroutine[Any, Any, None] | None) -> AsyncIterator[None]:
    """``work`` (a metrics ticker) runs while the block does and is cancelled when it ends;
    ``work`` failing ends the block with its failure. None: nothing alongside."""
    if work is None:
        yield
        return
    async with group() as tasks:
        task = tasks.create_task(work)
        try:
            yield
        finally:
            task.cancel()


@contextlib.contextmanager
def on_signals(handler: Callable[[int], None],
               signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """``handler(signum)`` on the running loop for each of ``signums`` while the block runs
    (none outside the main thread, where the loop cannot take them)."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in signums:
        try:
            loop.add_signal_handler(signum, handler, signum)
            installed.append(signum)
        except (RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]  # a group's create_task
Work = Coroutine[Any, Any, None]


async def workers_and_writer(workers: Callable[[Spawn], list[Work]],
                             writer: Callable[[Spawn], Work], end: Callable[[], Awaitable[None]],
                             beside: Work, stop: asyncio.Event, on_stop: Callable[[], None],
                             grace: float) -> None:
    """The collection's shape: ``workers(spawn)`` (``spawn`` starts a task of theirs, a
    feed's read) run until they are done or ``stop`` is set, then get ``grace`` s before
    they are cancelled (``on_stop`` first: nothing new starts); one ``writer(spawn)`` (its
    ``spawn`` for a commit beside it) takes their results until ``end()``; ``beside`` (the
    progress) runs until the workers end.

    A worker failing cancels the other workers, and the writer still commits what is done
    before the failure is raised; the writer failing (which would leave the workers waiting
    on a full queue) cancels everything, and is raised."""
    async with group() as outer:
        writing = outer.create_task(_with_group(writer))
        reporting = outer.create_task(beside)
        try:
            async with group() as inner:
                running = [inner.create_task(work) for work in workers(inner.create_task)]
                stopper = inner.create_task(stop.wait())
                pending: set[asyncio.Task[Any]] = set(running)
                try:
                    while pending and not stop.is_set():
                        done, _ = await asyncio.wait(pending | {stopper},
                                                     return_when=asyncio.FIRST_COMPLETED)
                        pending -= done
                    if stop.is_set():
                        on_stop()
                        await asyncio.wait(running, timeout=grace)
                finally:
                    on_stop()
                    for task in (stopper, *running):
                        task.cancel()
        finally:
            reporting.cancel()
            if not writing.done() and not writing.cancelling():  # else the group ends it
                await end()
                await writing  # commits what is done, whatever ended the workers


async def _with_group(work: Callable[[Spawn], Work]) -> None:
    """``work`` with a group of its own: a task it spawns that fails ends it too."""
    async with group() as tasks:
        await work(tasks.create_task)


class OneWriter(Generic[Item]):
    """Producers run side by side (at most ``at_once``) and hand items to ``put``; one
    writer task takes them in order (``take``) and commits in a thread (``commit``, called
    by ``take`` through ``in_thread``): two commits never overlap, by construction.

    One producer raising cancels the others and the writer at once, and is raised; the
    writer raising cancels the producers. ``take(None)`` is the end: flush what is left."""

    def __init__(self, take: Callable[[Item | None], Awaitable[None]], at_once: int,
                 depth: int = 64) -> None:
        self._take = take
        self._at_once = at_once
        self._items: asyncio.Queue[Item | None] = queue(depth)

    async def put(self, item: Item) -> None:
        """Hand ``item`` to the writer (waits while the writer is ``depth`` items behind)."""
        await self._items.put(item)

    async def run(self, producers: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
        """Every producer's result, in order, once the writer has taken all they put."""
        async with group() as tasks:
            writer = tasks.create_task(self._write())
            results = await all_of(producers, self._at_once)
            await self._items.put(None)
            await writer
        return results

    async def _write(self) -> None:
        while (item := await self._items.get()) is not None:
            await self._take(item)
        await self._take(None)
