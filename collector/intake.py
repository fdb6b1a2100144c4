"""From input lines to work: assign projects, reject bad IDs, drop duplicates, count them all.

Every line read ends in exactly one of: a request (``Target``), a rejection (``Rejected``,
an ``invalid_id`` status row), a counted duplicate, or -- when resuming -- an ID an earlier run
of the same date already committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.inputs import Line


@dataclass(frozen=True, slots=True)
class Target:
    project_id: str
    image_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    project_id: str
    image_id: str
    reason: str


@dataclass(slots=True)
class Intake:
    default_project: str | None
    done: set[str] = field(default_factory=set)  # keys committed by an earlier run; shrinks
    lines: int = 0
    duplicates: int = 0
    rejected: int = 0
    targets: int = 0
    resumed: int = 0
    _seen: set[str] = field(default_factory=set)

    def admit(self, line: Line) -> Target | Rejected | None:
        """The line's fate; None for a duplicate, or for an ID already committed."""
        self.lines += 1
        project = line.project_id or self.default_project
        problem = line.problem
        if problem is None and project is None:
            problem = "no project_id (give --project-id or a project_id column)"
        # A rejected line is keyed by what its row will show, so image_status holds it once.
        key = f"{project or ''}/{line.image_id}" if problem is None else f"!{line.image_id}"
        if key in self._seen:
            self.duplicates += 1
            return None
        self._seen.add(key)
        if key in self.done:
            self.done.discard(key)
            self.resumed += 1
            return None
        if problem is not None:
            self.rejected += 1
            return Rejected(line.number, project or "", line.image_id,
                            f"line {line.number}: {problem}")
        assert project is not None
        self.targets += 1
        return Target(project, line.image_id)

    @property
    def unique(self) -> int:
        return self.targets + self.rejected + self.resumed
