"""What publishing adds to a run's own tables: the change table against the night before."""

from __future__ import annotations

from collector.changes import Summary, compare, lean_memory
from collector.sink import ParquetSink


def stage_changes(sink: ParquetSink, run_id: str, trusted: frozenset[str]) -> Summary:
    """Compare the staged snapshot with the latest earlier published one and stage the change
    table, so that it is swapped in with the rest; a first snapshot has none. A backfill (a
    finished later date exists) also restages that date's changes, against this snapshot.
    Blocking."""
    later, previous = sink.later_date(), sink.previous_date()
    if later is None and previous is None:
        return Summary(None)  # a first snapshot: tonight is not even read
    lean_memory()  # the comparison's peak, not the collection's pool, sets the run's
    tonight = sink.night()
    if later is not None:
        table, _ = compare(tonight, sink.night(later), sink.snapshot_date, run_id, trusted)
        sink.commit_later_changes(later, table)
    if previous is None:
        return Summary(None)
    table, summary = compare(sink.night(previous), tonight, previous, run_id, trusted)
    sink.commit_changes(table)
    return summary
