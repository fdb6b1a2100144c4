"""Reading image IDs: text, CSV, JSON Lines, Parquet or stdin, streamed, never all in memory.

A reader yields one ``Line`` per input line or row, in order, with its number. It never raises
for a bad line: the line carries its ``problem`` and becomes an ``invalid_id`` status row. Only a
missing, unreadable or shapeless input (no ``image_id`` column) is a ``UsageError``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from collector.errors import UsageError
from collector.ids import MAX_ID_LENGTH, as_text, clean, problem_with, shown

MAX_LINE_BYTES = 65_536  # a longer line is rejected without being held in memory
FORMATS_BY_SUFFIX = {".txt": "text", ".ids": "text", ".csv": "csv", ".jsonl": "jsonl",
                     ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class Line(NamedTuple):  # a tuple: cheap to build on the hot path
    """One input line or row: its number, the ID (or the whole bad line), and any problem."""
    number: int
    image_id: str  # cleaned; for a rejected line, the whole line (see ids.as_text)
    project_id: str | None
    problem: str | None = None


def detect_format(path: str, given: str) -> str:
    """The input format: as given, or from the file's extension (stdin: text)."""
    if given != "auto":
        return given
    if path == "-":
        return "text"
    return FORMATS_BY_SUFFIX.get(Path(path).suffix.lower(), "text")


def _stdin() -> IO[bytes]:
    """Standard input's bytes; UsageError when it is closed (``<&-``), as cron may leave it."""
    stream = sys.stdin
    usable = stream is not None and not stream.closed
    if usable:
        try:
            stream.fileno()
        except (ValueError, OSError):
            usable = False
    if not usable:
        raise UsageError("input -: standard input is closed; pipe the IDs in, or give "
                         "--input FILE")
    return stream.buffer


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return _stdin()
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"input {path}: is a directory, not a file")
    try:
        return target.open("rb")
    except FileNotFoundError:
        raise UsageError(f"input {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"input {path}: cannot read it ({exc.strerror})") from None


def _bounded_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes, str | None]]:
    """(line number, bytes without EOL, None); for a line over ``MAX_LINE_BYTES``, only its
    start and the sha256 of the whole line, read in bounded pieces."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            start, rest, digest = chunk[:MAX_ID_LENGTH], chunk, hashlib.sha256(chunk)
            while rest and not rest.endswith(b"\n"):  # drain the rest of the long line
                rest = stream.readline(MAX_LINE_BYTES + 1)
                digest.update(rest.rstrip(b"\r\n"))
            yield number, start, digest.hexdigest()[:16]
            continue
        yield number, chunk.rstrip(b"\r\n"), None


def _line(number: int, raw: str, project: str | None) -> Line:
    value = clean(raw)
    problem = problem_with(value)
    if project is not None:
        project = clean(project) or None
        if project is not None and problem is None and (why := problem_with(project)):
            problem = f"project_id '{shown(project)}': {why}"
    return Line(number, value if problem is None else as_text(value), project, problem)


def _too_long(number: int, start: bytes, digest: str) -> Line:
    shown_start = as_text(start.decode("utf-8", "surrogateescape"))
    return Line(number, f"{shown_start}...(sha256 {digest})", None,
                f"line longer than {MAX_LINE_BYTES} bytes")


def read_text(stream: IO[bytes]) -> Iterator[Line]:
    """One ID a line; blank lines and ``#`` comments skipped."""
    for number, raw, too_long in _bounded_lines(stream):
        if too_long is not None:
            yield _too_long(number, raw, too_long)
            continue
        text = clean(raw.decode("utf-8", "surrogateescape"))
        if not text or text.startswith("#"):
            continue
        yield _line(number, text, None)


def read_jsonl(stream: IO[bytes]) -> Iterator[Line]:
    """One JSON object a line, with ``image_id`` and optionally ``project_id``."""
    for number, raw, too_long in _bounded_lines(stream):
        if too_long is not None:
            yield _too_long(number, raw, too_long)
            continue
        if not raw.strip(b" \t\r\n\xef\xbb\xbf"):
            continue
        try:
            obj: Any = orjson.loads(raw.lstrip(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError:
            yield Line(number, as_text(raw.decode("utf-8", "surrogateescape")), None,
                       "not valid JSON")
            continue
        image = obj.get("image_id") if isinstance(obj, dict) else None
        project = obj.get("project_id") if isinstance(obj, dict) else None
        if not isinstance(image, str) or not isinstance(project, str | None):
            yield Line(number, as_text(raw.decode("utf-8", "surrogateescape")), None,
                       "not an object with a string image_id (and optional string project_id)")
            continue
        yield _line(number, image, project)


def read_csv(stream: IO[bytes], name: str) -> Iterator[Line]:
    """A CSV with a header naming ``image_id`` (and optionally ``project_id``)."""
    too_long: list[Line] = []
    yield from _csv_rows(csv.reader(_csv_lines(stream, too_long)), name, too_long)


def _csv_lines(stream: IO[bytes], too_long: list[Line]) -> Iterator[str]:
    """The CSV's lines as text, each read in bounded pieces: a line over ``MAX_LINE_BYTES``
    is drained (never held whole), handed over in ``too_long``, and read as a blank line."""
    number, first = 0, True
    while chunk := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if first:
            chunk, first = chunk.removeprefix(b"\xef\xbb\xbf"), False
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            start, rest, digest = chunk[:MAX_ID_LENGTH], chunk, hashlib.sha256(chunk)
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(MAX_LINE_BYTES + 1)
                digest.update(rest.rstrip(b"\r\n"))
            too_long.append(_too_long(number, start, digest.hexdigest()[:16]))
            chunk = b"\n"
        yield chunk.decode("utf-8", "surrogateescape")


def _csv_rows(reader: Any, name: str, too_long: list[Line]) -> Iterator[Line]:
    csv.field_size_limit(MAX_LINE_BYTES)
    try:
        header = [clean(h).lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise UsageError(f"input {name}: CSV header unreadable ({exc})") from None
    if "image_id" not in header:
        raise UsageError(f"input {name}: CSV has no image_id column (header: "
                         f"{shown(','.join(header), 200)})")
    image_col = header.index("image_id")
    project_col = header.index("project_id") if "project_id" in header else None
    while True:
        try:
            row: list[str] | None = next(reader)
            error = None
        except StopIteration:
            row, error = None, None
        except csv.Error as exc:
            row, error = [], exc
        yield from too_long  # each was read as a blank line, in its place
        too_long.clear()
        if row is None:
            return
        if error is not None:
            yield Line(reader.line_num, "", None, f"unreadable CSV row ({error})")
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= image_col:
            yield Line(reader.line_num, as_text(",".join(row)), None, "row has no image_id cell")
            continue
        project = row[project_col] if project_col is not None and project_col < len(row) else None
        yield _line(reader.line_num, row[image_col], project)


def read_parquet(stream: IO[bytes], name: str) -> Iterator[Line]:
    """A Parquet file's ``image_id`` (and ``project_id``) columns, batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source: Any = stream if stream.seekable() else io.BytesIO(stream.read())
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"input {name}: not a readable Parquet file ({exc})") from None
    columns = parquet.schema_arrow.names
    if "image_id" not in columns:
        raise UsageError(f"input {name}: Parquet has no image_id column (columns: "
                         f"{shown(','.join(columns), 200)})")
    wanted = ["image_id"] + (["project_id"] if "project_id" in columns else [])
    number = 0
    for batch in parquet.iter_batches(batch_size=8192, columns=wanted):
        try:
            images = _texts(batch.column(0))
            projects = (_texts(batch.column(1)) if len(wanted) == 2
                        else [None] * len(images))
        except pa.ArrowException as exc:
            raise UsageError(f"input {name}: rows after {number} cannot be read as text "
                             f"({str(exc)[:200]})") from None
        for image, project in zip(images, projects, strict=True):
            number += 1
            yield _line(number, image or "", project)


def _texts(column: Any) -> list[Any]:
    """A column's values as text; bytes that are not UTF-8 are kept (surrogate-escaped) so
    that the one bad value becomes an ``invalid_id`` row, not a refused input."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [v.decode("utf-8", "surrogateescape") if v is not None else None
                for v in column.to_pylist()]
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        column = column.cast(pa.string())  # numbers and the like
    try:
        return column.to_pylist()  # type: ignore[no-any-return]
    except UnicodeDecodeError:  # a string column holding bytes that are not UTF-8
        binary = pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()
        return _texts(column.cast(binary))


def read_input(path: str, input_format: str) -> Generator[Line, None, None]:
    """Every line of the input, in order; raises ``UsageError`` only for the input as a whole."""
    fmt = detect_format(path, input_format)
    stream = _open_binary(path)
    try:
        if fmt == "text":
            yield from read_text(stream)
        elif fmt == "jsonl":
            yield from read_jsonl(stream)
        elif fmt == "csv":
            yield from read_csv(stream, path)
        elif fmt == "parquet":
            yield from read_parquet(stream, path)
        else:
            raise UsageError(f"--input-format {fmt}: unknown")
    except OSError as exc:
        raise UsageError(f"input {path}: read failed ({exc.strerror or exc})") from None
    finally:
        if path != "-":
            stream.close()


@dataclass(frozen=True, slots=True)
class Survey:
    """What one pass over the input file tells before the run."""
    digest: str | None  # sha256 of the input's bytes; None for stdin
    lines: int | None  # lines (Parquet: rows), an upper bound on IDs for the progress bar


def survey(path: str, fmt: str) -> Survey:
    """One pass over the input file before the run: its hash (for resuming) and its size."""
    if path == "-":
        return Survey(None, None)
    digest, count, last = hashlib.sha256(), 0, b"\n"
    try:
        with Path(path).open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                count += block.count(b"\n")
                last = block[-1:]
    except OSError as exc:
        raise UsageError(f"input {path}: read failed ({exc.strerror or exc})") from None
    count += last != b"\n"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        count = int(pq.ParquetFile(path).metadata.num_rows)
    return Survey(digest.hexdigest(), count - (1 if fmt == "csv" else 0))
