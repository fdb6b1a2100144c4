"""The staging states of a snapshot date, and every name they are marked with: the one module
that names a staging folder, file or marker (others call these functions, never glue names).

A date D is staged under ``_staging/snapshot_date=D/`` (``date_staging``); its state is read
from the markers in that folder alone, so that any run can tell, after any crash, what to do::

    (none) ──sink.resume: resume.json {fingerprint}──> COLLECTING
    COLLECTING  <table>/part-*.parquet chunks (status file last: the chunk's commit record);
                a discovery run lists first: images/, listing_status/, then listed.json
                ──publish.stage_changes──> changes/, later-changes/snapshot_date=L/ (backfill)
                ──(bucket) sink._pack──> packed/<table>/ one object each, + packed/<table>/to-do
                ──sink.publish: publishing {run_id, changes}──> PUBLISHING
    PUBLISHING  hygiene.finish_publish swaps each table in: on disk a folder rename (what
                it replaced goes to replaced-<table>), in a bucket a copy, then to-do deleted
                ──sink.discard (lease.clear; the marker goes last)──> (none)

    sharded: each shard K of N writes its own COLLECTING folder shard-K-of-N/ (lock
    shard-K-of-N.lock beside it), ended by shard-K-of-N/shard.json (the pipeline); a discovery
    night's listing is made once in plan/ (``cph-collector plan``), ended by plan/shard.json.
    ``publish --shards`` (merge.publish_shards, or night: the last shard to stage) claims
    every shard lock, checks the marks, gathers the chunks into the date's COLLECTING folder
    and publishes it as above, then clears the shards' folders.

What a crash leaves, and who finishes it:

* COLLECTING: committed chunks, perhaps ``.tmp`` files and a members chunk without its
  status file. The next run of the same date and input (same ``resume.json`` fingerprint)
  adopts the definitive answers (``sink.resume``) and removes the rest (and ``packed/``); a
  listing without ``listed.json``, or with a failed row, is listed again. Another input
  starts over (``lease.clear``). Another date's leftovers of dead runs are removed by the next
  run's ``hygiene.clean_stale_staging`` (not the shards' or the plan's work: a sharded night
  waits for its publish; not a live shard's: alive is a held lock).
* PUBLISHING: some tables swapped, some not. The next run (or ``plan``, ``publish``) first
  runs ``hygiene.finish_interrupted``: it finishes the swap (``finish_publish`` is safe to
  repeat), records the run the marker names, and clears the staging, marker last.
* A shard stopped before its ``shard.json``: its re-run resumes its folder; ``publish --shards``
  refuses until every mark is there.
* ``_staging/.tmp/<writer>/``: a bucket's temporary uploads, removed once their writer is dead
  (``lease.clear_tmp``).
"""

from __future__ import annotations

import datetime as dt

_ROOT = "_staging"
_DATE = "snapshot_date="
_LOCK = ".lock"
_SHARD = "shard-"
_OF = "-of-"
_PLAN = "plan"
_LATER = "later-changes"
_PACKED = "packed"


def root() -> str:
    """The key of the folder that holds all staging (no reader's glob sees it)."""
    return _ROOT


def tmp() -> str:
    """The key of a bucket's temporary uploads (``store``: written, then copied in)."""
    return f"{_ROOT}/.tmp"


def tmp_of(writer: str) -> str:
    """The folder of one writer's temporary uploads (its run id, or a random name)."""
    return f"{tmp()}/{writer}"


def date_name(snapshot_date: dt.date) -> str:
    """A date's folder name, as staging and the partitions have it: ``snapshot_date=D``."""
    return f"{_DATE}{snapshot_date.isoformat()}"


def named_date(name: str) -> dt.date | None:
    """The date a folder name reads as (``snapshot_date=D``, or a bare ``D``), else None."""
    try:
        return dt.date.fromisoformat(name.removeprefix(_DATE))
    except ValueError:
        return None


def date_of(name: str) -> dt.date | None:
    """The date of a folder name exactly as the tool gives it (``date_name``), else None."""
    date = named_date(name)
    return date if date is not None and name == date_name(date) else None


def looks_dated(name: str) -> bool:
    """A folder name that begins as a date's does (whatever follows)."""
    return name.startswith(_DATE)


def date_staging(snapshot_date: dt.date) -> str:
    """The key of a date's staging folder."""
    return f"{_ROOT}/{date_name(snapshot_date)}"


def shard_name(index: int, count: int) -> str:
    """A shard's folder name in its date's staging: ``shard-K-of-N``."""
    return f"{_SHARD}{index}{_OF}{count}"


def is_shard(name: str) -> bool:
    """A name that begins as a shard's folder (or lock) does."""
    return name.startswith(_SHARD)


def is_shard_folder(name: str) -> bool:
    """A shard's folder name (``shard-K-of-N``)."""
    return is_shard(name) and _OF in name


def is_of_count(name: str, count: int) -> bool:
    """A shard folder of a night of ``count`` shards."""
    return name.endswith(f"{_OF}{count}")


def shard_label(name: str) -> str:
    """``K/N`` of a shard's folder name."""
    return name.removeprefix(_SHARD).replace(_OF, "/")


def shard_folder(snapshot_date: dt.date, index: int, count: int) -> str:
    """The key of shard ``index`` of ``count``'s staging folder."""
    return f"{date_staging(snapshot_date)}/{shard_name(index, count)}"


def lock_name(writer: str) -> str:
    """The lock file beside a writer's folder (``shard-K-of-N.lock``)."""
    return f"{writer}{_LOCK}"


def is_lock(name: str) -> bool:
    """A lock file's name."""
    return name.endswith(_LOCK)


def locked(lock: str) -> str:
    """The writer (its folder's name) a lock file is named after."""
    return lock.removesuffix(_LOCK)


def shard_lock(snapshot_date: dt.date, shard: str) -> str:
    """The key of a shard's lock (``shard``: its folder name)."""
    return f"{date_staging(snapshot_date)}/{lock_name(shard)}"


def plan_name() -> str:
    """The plan's folder name in a date's staging, and the ``shard`` its mark names."""
    return _PLAN


def plan_folder(staging: str) -> str:
    """The plan's folder in a date's staging (``staging``)."""
    return f"{staging}/{_PLAN}"


def resume_marker(staging: str) -> str:
    """The input fingerprint of the work in ``staging``: what a resume adopts."""
    return f"{staging}/resume.json"


def listed_marker(staging: str) -> str:
    """Present once a discovery run's listing is all committed (with its notes)."""
    return f"{staging}/listed.json"


def publishing_marker(staging: str) -> str:
    """Present while a publish swaps the tables in (whose, and its change summary)."""
    return f"{staging}/publishing"


def shard_mark_name() -> str:
    """The file name of a shard's (or the plan's) finished mark, for messages."""
    return "shard.json"


def shard_mark(folder: str) -> str:
    """The mark in a shard's (or the plan's) ``folder`` once it collected its share."""
    return f"{folder}/{shard_mark_name()}"


def later_root(staging: str) -> str:
    """The folder of later dates' recomputed change tables (a backfill's)."""
    return f"{staging}/{_LATER}"


def later_name(name: str) -> str:
    """A later date's table as a staged name (``name``: its date folder's name)."""
    return f"{_LATER}/{name}"


def later(staging: str, snapshot_date: dt.date) -> str:
    """The staged change table of a later date."""
    return f"{staging}/{later_name(date_name(snapshot_date))}"


def packed_root(staging: str) -> str:
    """A bucket's packed tables: each staged table as one object, ready to be copied in."""
    return f"{staging}/{_PACKED}"


def packed(staging: str, name: str) -> str:
    """The packed folder of one staged table (``name``: a table or ``later_name``)."""
    return f"{packed_root(staging)}/{name}"


def packed_later(staging: str) -> str:
    """The packed folder of the later dates' change tables."""
    return f"{packed_root(staging)}/{_LATER}"


def todo(packed_folder: str) -> str:
    """The mark beside a packed table until it is copied in."""
    return f"{packed_folder}/to-do"


def replaced(staging: str, name: str) -> str:
    """Where a disk publish moves the partition a staged table (``name``) replaced."""
    return f"{staging}/replaced-{name.replace('/', '-')}"
