"""Reading IDs: every format, every kind of bad line, and arbitrary bytes never crash it."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.errors import UsageError
from collector.inputs import MAX_LINE_BYTES, Line, read_input, read_text
from collector.intake import IdSet, Intake, Rejected, Target, _find


def lines_of(tmp_path: Path, name: str, data: bytes, fmt: str = "auto") -> list[Line]:
    path = tmp_path / name
    path.write_bytes(data)
    return list(read_input(str(path), fmt))


def test_text_skips_blanks_and_comments_and_strips_bom_crlf_and_tabs(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfabc\r\n\n# a comment\n\tdef \r\n   \nghi"
    got = lines_of(tmp_path, "ids.txt", data)
    assert [(line.number, line.image_id, line.problem) for line in got] == [
        (1, "abc", None), (4, "def", None), (6, "ghi", None)]


@pytest.mark.parametrize(("raw", "why"), [
    (b"a/b", "contains '/'"),
    (b"..", "contains '.'"),
    (b"a%2Fb", "contains '%'"),
    (b"a?b", "contains '?'"),
    (b"a#b", "contains '#'"),
    (b"has space", "contains ' '"),
    ("\u0456mage".encode(), "contains '\\u0456'"),  # Cyrillic i
    (b"ab\xe2\x80\x8bcd", "contains '\\u200b'"),  # zero-width space inside
    (b"ab\xe2\x80\xaecd", "contains '\\u202e'"),  # bidi override
    (b"ab\x00cd", "contains '\\x00'"),
    (b"\xff\xfeab", "not valid UTF-8"),
    (b"x" * 65, "longer than 64 characters (65)"),
])
def test_a_bad_id_is_rejected_with_its_line_and_reason(tmp_path: Path, raw: bytes,
                                                       why: str) -> None:
    [line] = lines_of(tmp_path, "ids.txt", b"# header\n" + raw + b"\n")
    assert line.number == 2
    assert line.problem is not None and line.problem.startswith(why)
    assert line.problem.isascii() and line.problem.isprintable()
    # the row keeps the whole line: valid UTF-8 as it is, undecodable bytes escaped
    assert line.image_id == raw.decode("utf-8", "backslashreplace")


def test_two_long_invalid_lines_that_share_their_start_are_two_rows(tmp_path: Path) -> None:
    first, second = "x" * 64 + "-first/", "x" * 64 + "-second/"
    too_long = [b"y" * 70_000 + b"1", b"y" * 70_000 + b"2"]
    lines = lines_of(tmp_path, "ids.txt", "\n".join([first, second]).encode() + b"\n"
                     + b"\n".join(too_long) + b"\n")
    intake = Intake("p1")
    verdicts = [intake.admit(line) for line in lines]
    assert [type(v).__name__ for v in verdicts] == ["Rejected"] * 4
    assert intake.duplicates == 0
    assert [v.image_id for v in verdicts[:2]] == [first, second]  # type: ignore[union-attr]
    assert verdicts[2].image_id != verdicts[3].image_id  # type: ignore[union-attr]
    assert [v.reason.split(":")[0] for v in verdicts] == [  # type: ignore[union-attr]
        "line 1", "line 2", "line 3", "line 4"]


def test_a_ten_megabyte_line_is_rejected_without_holding_it(tmp_path: Path) -> None:
    got = lines_of(tmp_path, "ids.txt", b"ok1\n" + b"A" * 10_000_000 + b"\nok2\n")
    assert [line.image_id for line in got if line.problem is None] == ["ok1", "ok2"]
    [bad] = [line for line in got if line.problem]
    assert bad.number == 2 and bad.problem == f"line longer than {MAX_LINE_BYTES} bytes"
    assert len(bad.image_id) < 200


def test_csv_with_project_column(tmp_path: Path) -> None:
    got = lines_of(tmp_path, "ids.csv", b"\xef\xbb\xbfImage_ID,project_id\r\nabc,p1\r\ndef,\r\n")
    assert [(line.image_id, line.project_id) for line in got] == [("abc", "p1"), ("def", None)]


def test_csv_without_image_id_column_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no image_id column"):
        lines_of(tmp_path, "ids.csv", b"id,project\nabc,p1\n")


def test_jsonl_rows_and_broken_rows(tmp_path: Path) -> None:
    data = b'{"image_id": "abc", "project_id": "p1"}\n\n{"image_id": 5}\nnot json\n["x"]\n'
    got = lines_of(tmp_path, "ids.jsonl", data)
    assert [(line.number, line.image_id if not line.problem else None) for line in got] == [
        (1, "abc"), (3, None), (4, None), (5, None)]
    assert got[2].problem == "not valid JSON"


def test_parquet_input(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"image_id": ["a1", "a/2", None], "project_id": ["p", "p", "p"]}),
                   path)
    got = list(read_input(str(path), "auto"))
    assert [(line.image_id, line.problem is None) for line in got] == [
        ("a1", True), ("a/2", False), ("", False)]


def test_parquet_without_image_id_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": ["a1"]}), path)
    with pytest.raises(UsageError, match="no image_id column"):
        list(read_input(str(path), "auto"))


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "is a directory"),
])
def test_a_missing_or_directory_input_is_a_usage_error(tmp_path: Path, setup, message) -> None:  # type: ignore[no-untyped-def]
    path = setup(tmp_path / "in.txt")
    with pytest.raises(UsageError, match=message):
        list(read_input(str(path), "auto"))


def test_the_format_can_be_forced(tmp_path: Path) -> None:
    got = lines_of(tmp_path, "ids.data", orjson.dumps({"image_id": "abc"}) + b"\n", "jsonl")
    assert got[0].image_id == "abc"


def test_duplicates_are_counted_and_admitted_once() -> None:
    intake = Intake("p1")
    lines = [Line(1, "abc", None), Line(2, "abc", None), Line(3, "abc", "p2"),
             Line(4, "", None, "empty ID"), Line(5, "", None, "empty ID")]
    fates = [intake.admit(line) for line in lines]
    assert fates == [Target("p1", "abc"), None, Target("p2", "abc"),
                     Rejected(4, "p1", "", "line 4: empty ID"), None]
    assert (intake.lines, intake.unique, intake.duplicates, intake.rejected) == (5, 3, 2, 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_and_every_line_has_one_fate(data: bytes) -> None:
    intake = Intake("p1")
    for line in read_text(io.BytesIO(data)):
        fate = intake.admit(line)
        assert fate is None or isinstance(fate, Target | Rejected)
        if isinstance(fate, Target):
            assert fate.image_id.isascii() and "/" not in fate.image_id
    assert intake.lines == intake.targets + intake.rejected + intake.duplicates


def test_many_ids_stream_through_with_every_line_accounted_for(tmp_path: Path) -> None:
    """200,000 lines (a million, and the memory it takes, are bench/compare.py's)."""
    path = tmp_path / "many.txt"
    with path.open("w") as handle:
        for n in range(200_000):
            handle.write(f"{n % 180_000:032x}\n")  # the last 20,000 repeat earlier ones
    intake = Intake("p1")
    targets = sum(isinstance(intake.admit(line), Target) for line in read_input(str(path), "auto"))
    assert (targets, intake.duplicates, intake.rejected) == (180_000, 20_000, 0)


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_a_parquet_id_that_is_not_utf8_is_an_invalid_id_row(tmp_path: Path,
                                                            kind: pa.DataType) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"image_id": pa.array([b"ok1", b"\xff\xfe", b"ok2"], kind)}), path)
    lines = list(read_input(str(path), "auto"))
    assert [(x.number, x.image_id, x.problem) for x in lines] == [
        (1, "ok1", None), (2, "\\xff\\xfe", "not valid UTF-8"), (3, "ok2", None)]


def test_a_parquet_id_column_that_is_not_text_at_all_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"image_id": pa.array([[1, 2], [3]])}), path)
    with pytest.raises(UsageError, match="cannot be read as text"):
        list(read_input(str(path), "auto"))


def test_a_huge_csv_line_is_read_in_bounded_pieces_and_becomes_one_invalid_row(
        tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    huge = b"x" * (5 << 20)
    path.write_bytes(b"\xef\xbb\xbfimage_id,project_id\nimg1,p1\n" + huge + b",p1\nimg2,p1\n")
    lines = list(read_input(str(path), "auto"))
    digest = hashlib.sha256(huge + b",p1").hexdigest()[:16]
    assert [(x.number, x.image_id, x.problem) for x in lines] == [
        (2, "img1", None),
        (3, "x" * 64 + f"...(sha256 {digest})", "line longer than 65536 bytes"),
        (4, "img2", None)]


def test_the_duplicate_check_keeps_ids_exact() -> None:
    """Hex IDs are stored packed, but never merged with another spelling."""
    seen = IdSet()
    lower, upper = "0123456789abcdef" * 2, "0123456789ABCDEF" * 2
    assert seen.add("p1", lower) and not seen.add("p1", lower)
    assert seen.add("p1", upper)  # another ID to the API, so not a duplicate
    assert seen.add("p2", lower)  # the same image in another project
    assert seen.add("p1", "img-1") and not seen.add("p1", "img-1")
    assert len(seen) == 4
    assert seen.discard("p1", lower) and not seen.discard("p1", lower)
    assert len(seen) == 3


def test_a_packed_id_is_only_found_where_one_starts() -> None:
    """Two IDs side by side in a bucket contain a third at an odd offset: that is no match."""
    first, second = bytes.fromhex("00" * 8 + "11" * 8), bytes.fromhex("22" * 8 + "11" * 8)
    straddling = first[8:] + second[:8]
    bucket = bytearray(first + second)
    assert _find(bucket, straddling) == -1
    assert (_find(bucket, first), _find(bucket, second)) == (0, 16)
    bucket += straddling  # now also where a key starts
    assert _find(bucket, straddling) == 32


def test_sequential_ids_stay_fast_to_check() -> None:
    """IDs that share their leading digits still spread over buckets (by hash)."""
    seen = IdSet()
    ids = [f"{n:032x}" for n in range(50_000)]
    assert all(seen.add("p1", i) for i in ids)
    assert not any(seen.add("p1", i) for i in ids)
    assert len(seen._packed["p1"]) > 1000
