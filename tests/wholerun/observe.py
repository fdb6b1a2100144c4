"""What a reader of the output finds: a date's visible Parquet files, the manifests and a
metrics file — read from a folder or a bucket the way the README's globs read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

TIMES = ("create_time", "update_time", "collected_at")


@dataclass
class Reader:
    """The output, on disk (``fs`` None, ``base`` a folder) or in a bucket (``bucket/prefix``)."""
    base: str
    fs: pafs.FileSystem | None = None

    def _fs(self) -> pafs.FileSystem:
        return self.fs or pafs.LocalFileSystem()

    def files(self, folder: str) -> list[str]:
        """The files directly in ``folder`` (relative to the output), sorted."""
        infos = self._fs().get_file_info(pafs.FileSelector(f"{self.base}/{folder}",
                                                           allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File)

    def rows(self, table: str, date: str) -> list[dict[str, Any]] | None:
        """Every row of ``table``'s partition of ``date`` as a reader's glob sees it
        (``table/*/*.parquet``), times as epoch ms; None when no file is visible."""
        paths = [p for p in self.files(f"{table}/snapshot_date={date}") if p.endswith(".parquet")]
        if not paths:
            return None
        out: list[dict[str, Any]] = []
        for path in paths:
            data = pq.read_table(path, filesystem=self._fs())
            for name in TIMES:
                if name in data.column_names:
                    index = data.column_names.index(name)
                    data = data.set_column(index, name, data.column(name).cast(pa.int64()))
            out += data.to_pylist()
        return out

    def manifest(self, run_id: str) -> dict[str, Any] | None:
        try:
            with self._fs().open_input_stream(f"{self.base}/runs/{run_id}.json") as stream:
                doc = orjson.loads(stream.read())
        except (OSError, FileNotFoundError):
            return None
        return doc if isinstance(doc, dict) else None


    def latest_finished(self, date: str) -> dict[str, Any] | None:
        """The manifest of the run that published ``date`` last."""
        found = [doc for name in self.files("runs") if name.endswith(".json")
                 for doc in [self.manifest(name.rsplit("/", 1)[1].removesuffix(".json"))]
                 if doc and doc.get("status") == "finished" and doc.get("snapshot_date") == date]
        return max(found, key=lambda d: str(d.get("ended_at")), default=None)


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    """A textfile's samples, read with ``prometheus_client``'s parser; None if none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
