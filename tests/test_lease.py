"""A bucket lease belongs to a run id; a dead holder's is taken over quickly, a live one never.

Against moto's S3 server on loopback, with the lease's clock and sleep injected: time moves only
when the lock waits, so a 30 s lease is checked in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.errors import UsageError
from collector.lease import LOCK_NAME, BucketLock, LeaseLost, Timing, read_lease
from collector.store import BucketStore
from tests.conftest import S3_ENV, S3Server

REAL = Timing()  # the shipped times: 20 s lease, renewed every 2 s, settled 5 s


class Clock:
    """Wall-clock seconds that move when the lock sleeps; ``on_sleep`` runs at each sleep (what
    the other runs do meanwhile)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now, self.slept = start, 0.0
        self.on_sleep: Callable[[], None] = lambda: None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        self.on_sleep()


@pytest.fixture
def store(s3: S3Server) -> BucketStore:
    from collector.build import open_store
    from collector.config import Settings

    url = s3.bucket()
    made = open_store(Settings.of(storage_endpoint=s3.endpoint), url, S3_ENV)
    assert isinstance(made, BucketStore)
    return made


@pytest.fixture
def one_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run here is PID 1 on host ``cph-collector-1``, as the pods of one Indexed Job
    index are."""
    monkeypatch.setattr("socket.gethostname", lambda: "cph-collector-1")
    monkeypatch.setattr("os.getpid", lambda: 1)


def taker(store: BucketStore, run_id: str, clock: Clock) -> BucketLock:
    return BucketLock(store, run_id, clock=clock.time, sleep=clock.sleep, timing=REAL,
                      fence=True)


def put_lease(store: BucketStore, **lease: Any) -> None:
    store.write(LOCK_NAME, orjson.dumps(lease))


def test_a_killed_holders_replacement_takes_its_lease_within_the_bound(
        store: BucketStore, one_pod: None) -> None:
    """kill -9 a second after a renewal; the replacement pod (new run id, maybe another PID)
    starts at Kubernetes' first retry, 10 s later: it waits the lease out, then resumes."""
    clock = Clock()
    put_lease(store, run_id="20261201T020000Z-dead00", token="t-dead", host="cph-collector-1",
              pid=7, renewed=clock.now - 11)
    with taker(store, "20261201T020000Z-new000", clock) as held:
        assert held.held == [LOCK_NAME]
        assert read_lease(store, LOCK_NAME)["run_id"] == "20261201T020000Z-new000"  # type: ignore[index]
    assert REAL.lease - 11 <= clock.slept <= REAL.lease - 11 + REAL.renew + REAL.settle  # 16 s
    assert not store.exists(LOCK_NAME)  # released


def test_a_live_lease_of_the_same_host_and_pid_is_never_taken_over(
        store: BucketStore, one_pod: None) -> None:
    """Two pods of one index, same host name, both PID 1: the second waits while the first
    keeps renewing, then refuses; the first still holds its lease."""
    clock = Clock()
    first = taker(store, "20261201T020000Z-first0", clock)
    with first:
        clock.on_sleep = first.renew_once  # the first one lives, renewing on time
        second = taker(store, "20261201T020000Z-again0", clock)
        clock.slept = 0.0
        with pytest.raises(UsageError, match=r"another cph-collector run \(20261201T020000Z-"
                                             r"first0 on cph-collector-1, pid 1, seen \d+ s ago"):
            second.__enter__()
        assert clock.slept <= REAL.lease + 2 * REAL.renew  # refused within the bound
        first.verify()  # still its own
        assert read_lease(store, LOCK_NAME)["run_id"] == "20261201T020000Z-first0"  # type: ignore[index]


def test_a_lease_overwritten_by_another_run_stops_every_write_and_the_publish(
        store: BucketStore) -> None:
    clock = Clock()
    held = taker(store, "20261201T020000Z-mine00", clock)
    with held:
        store.write("_staging/snapshot_date=2026-12-01/a", b"1")  # ours: writes go through
        put_lease(store, run_id="20261201T020000Z-thief0", token="t", renewed=clock.now)
        held.renew_once()
        with pytest.raises(LeaseLost, match=r"^\[Errno \d+\] lost the lock .cph-collector.lock "
                                            r"to run 20261201T020000Z-thief0; this run stops"):
            store.write("_staging/snapshot_date=2026-12-01/b", b"2")
        with pytest.raises(LeaseLost):
            store.delete("_staging/snapshot_date=2026-12-01/a")
        with pytest.raises(LeaseLost):
            held.verify()
        store.write("runs/20261201T020000Z-mine00.json", b"{}")  # its own manifest still says
    assert not store.exists("_staging/snapshot_date=2026-12-01/b")
    assert read_lease(store, LOCK_NAME)["run_id"] == "20261201T020000Z-thief0"  # type: ignore[index]


def test_publish_reads_the_lease_back_even_before_the_renewal_notices(
        store: BucketStore) -> None:
    clock = Clock()
    held = taker(store, "20261201T020000Z-mine00", clock)
    with held:
        put_lease(store, run_id="20261201T020000Z-thief0", token="t", renewed=clock.now)
        with pytest.raises(LeaseLost, match=r"lost the lock .cph-collector.lock to run "
                                            r"20261201T020000Z-thief0"):
            held.verify()


def test_renewals_that_keep_failing_lose_the_lease_before_another_run_may_take_it(
        store: BucketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    held = taker(store, "20261201T020000Z-mine00", clock)
    with held:
        def down(key: str, data: object) -> None:
            raise OSError(5, "Input/output error")

        written = read_lease(store, LOCK_NAME)["renewed"]  # type: ignore[index]
        monkeypatch.setattr(store, "write", down)
        clock.now += REAL.renew
        held.renew_once()
        held.check()  # one failed renewal is not a lost lease
        while held.lost is None:
            clock.now += REAL.renew
            held.renew_once()
        assert REAL.lease - REAL.renew <= clock.now - written < REAL.lease  # before a taker
        with pytest.raises(LeaseLost, match=r"could not renew the lock .cph-collector.lock for "
                                            r"\d+ s \(Input/output error\); this run stops"):
            held.check()
        monkeypatch.undo()


def test_the_shipped_times_let_a_replacement_in_within_half_a_minute() -> None:
    """Kubernetes retries a failed index at 10, 20 and 40 s: a replacement waits a dead
    lease out (at most lease + renew) and settles, then resumes — before a second retry.
    A settle of two renewals lets a holder that was taken over notice it before the taker
    writes anything."""
    assert (REAL.lease, REAL.renew, REAL.settle) == (20.0, 2.0, 5.0)
    assert REAL.lease + REAL.renew + REAL.settle < 30
    assert REAL.renew * 2 <= REAL.settle < REAL.lease


def test_a_store_too_slow_to_take_the_lease_safely_is_refused_and_leaves_no_lease(
        store: BucketStore) -> None:
    """A read-to-written slower than the settle time could land after another run confirmed
    its own: refuse (exit 2) rather than guess, and take our lease back."""
    clock = Clock()
    real = store.write

    def slow(key: str, data: Any) -> None:
        clock.now += REAL.settle  # the write took as long as the settle time
        real(key, data)

    store.write = slow  # type: ignore[method-assign]
    with pytest.raises(UsageError, match=r"^output s3://\S+: cannot take the lock "
                                         r"\.cph-collector\.lock \(the store answers too slowly "
                                         r"to take it safely\)$"):
        taker(store, "20261201T020000Z-slow00", clock).__enter__()
    assert not store.exists(LOCK_NAME)


def test_a_lock_file_a_mender_unlinks_under_a_starting_writer_never_gives_two_holders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A opens shard-2-of-3.lock; a mender (holding it) unlinks it; A's flock then succeeds on
    the unlinked file. A must notice and lock the file the path names, so B is refused."""
    import fcntl

    from collector import lease_disk as lease
    from collector.lease import OutputLock

    name = "shard-2-of-3.lock"
    real = fcntl.flock
    calls: list[int] = []

    def flock(fd: int, op: int) -> None:
        calls.append(fd)
        if len(calls) == 1:  # the mender, between A's open and A's flock
            with lease.flock_claims([tmp_path / name], unlink=True):
                pass
        real(fd, op)

    monkeypatch.setattr(lease.fcntl, "flock", flock)
    with OutputLock(tmp_path, name, "20261201T010000Z-aaaaaa"):
        monkeypatch.setattr(lease.fcntl, "flock", real)
        with pytest.raises(UsageError, match="20261201T010000Z-aaaaaa"), \
                OutputLock(tmp_path, name, "20261201T010000Z-bbbbbb"):
            pass


def test_a_fresh_temporary_upload_of_a_writer_without_a_lease_outlives_a_mender(
        store: BucketStore) -> None:
    """A starting run uploads its lease (and check its probe) under a random name before it
    holds a lease: a mender's ``clear_tmp`` leaves it until it is older than the lease."""
    import time

    from collector.lease import clear_tmp
    from collector.lease_bucket import TIMING
    from collector.staging import tmp_of

    key = f"{tmp_of(store.writer)}/upload"
    store.fs.create_dir(store.path(tmp_of(store.writer)))
    with store.fs.open_output_stream(store.path(key)) as handle:
        handle.write(b"half of an upload")
    clear_tmp(store)
    assert store.read(key) == b"half of an upload"  # mid-write: it stays
    clear_tmp(store, clock=lambda: time.time() + TIMING.lease + 1)
    assert not store.exists(key)  # long gone: removed
