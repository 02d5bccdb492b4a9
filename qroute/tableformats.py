"""Reading a labelled file (CSV, TSV, JSONL, Parquet) into numbered records.

What is wrong with a file as a file (its encoding, an open quote, a repeated column, a
field over ``table.max_text_chars``) is decided here; what is wrong with a row as a
labelled example is ``qroute.table``'s.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from qroute.config import TableSettings
from qroute.errors import TableError

__all__ = ["FORMATS", "read_records"]

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


_HEAD = 1 << 20


def _detect_encoding(path: Path, forced: str | None) -> str:
    if forced:
        try:
            # A forced UTF-8 still drops a BOM (Excel's "CSV UTF-8" writes one): read as
            # plain utf-8 it would be part of the first column's name, and every row
            # would then miss that column.
            return "utf-8-sig" if codecs.lookup(forced).name == "utf-8" else forced
        except LookupError:
            return forced  # named as unknown when the file is read
    with path.open("rb") as handle:
        head = handle.read(_HEAD)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a read cut short can end inside a character; in a whole (small) file an
        # invalid last character is as telling as any other.
        cut = (
            len(head) == _HEAD
            and exc.start >= len(head) - 3
            and exc.reason == "unexpected end of data"
        )
        if not cut:
            return "cp949"
    return "utf-8-sig"


def _bad_line(path: Path, encoding: str) -> int:
    """The 1-based line of ``path`` that does not decode as ``encoding``."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return number
    return 0


class _Lines:
    """The lines of a text file, for ``csv.reader``: counts them and notes whether the
    file ran out while a record was being read (a quote left open runs to the end)."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self.exhausted = False
        self.record: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._handle.readline()
        if not line:
            self.exhausted = True
            raise StopIteration
        self.record.append(line)
        return line


def _quote_left_open(text: str, delimiter: str) -> bool:
    """Whether ``text`` (one CSV record) ends inside a quoted field."""
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _csv_records(
    path: Path, handle: TextIO, delimiter: str, settings: TableSettings
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    # The csv module refuses fields over 131,072 characters; a text may be as long as
    # table.max_text_chars (the limit is process-wide: only ever raised).
    csv.field_size_limit(max(csv.field_size_limit(), settings.max_text_chars + 1024))
    lines = _Lines(handle)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise TableError([f"{path}:1: cannot read the header ({exc})"]) from None
    repeated = sorted(name for name, n in Counter(header).items() if n > 1 and name)
    if repeated:
        raise TableError(
            [
                f"{path}:1: the header names column(s) {', '.join(map(repr, repeated))} "
                "more than once: give each column its own name"
            ]
        )
    while True:
        start = reader.line_num + 1  # a record's number is the line it starts on
        lines.record = []
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            limit = csv.field_size_limit()
            if "field larger than field limit" in str(exc):
                yield (
                    start,
                    None,
                    f"a field is longer than {limit} characters (table.max_text_chars is "
                    f"{settings.max_text_chars}), or a quote opened here is never closed",
                )
            else:
                yield start, None, f"not valid CSV ({exc})"
            continue
        if not row:
            continue  # a blank line
        end = reader.line_num
        if lines.exhausted and _quote_left_open("".join(lines.record), delimiter):
            yield (
                start,
                None,
                f"a quoted field opens on this line and is never closed, so lines "
                f"{start}-{end} were read as one field: close the quote, or double a "
                'quote that is part of the text ("")',
            )
            continue
        # As csv.DictReader: a missing trailing field is None, extra fields are dropped.
        yield start, dict(itertools.zip_longest(header, row[: len(header)])), None


def _parquet_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise TableError(
            [f"{path}: reading Parquet needs pyarrow: pip install 'qroute[parquet]'"]
        ) from exc
    try:
        table = pq.ParquetFile(path)
        names = table.schema_arrow.names
        repeated = sorted(name for name, n in Counter(names).items() if n > 1)
        if repeated:
            raise TableError(
                [
                    f"{path}: the file names column(s) {', '.join(map(repr, repeated))} "
                    "more than once: give each column its own name"
                ]
            )
        number = 0
        for batch in table.iter_batches(batch_size=8192):
            for record in batch.to_pylist():
                number += 1
                yield number, record, None
    except (pa.ArrowException, OSError) as exc:
        raise TableError(
            [f"{path}: cannot read the file as Parquet ({exc}); check that it is one"]
        ) from None


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        repeated = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"the object has the key(s) {', '.join(map(repr, repeated))} twice")
    return record


def _records(
    path: Path, fmt: str, encoding: str | None, settings: TableSettings
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (row number, record or None, problem) for each data row of the file."""
    if fmt == "parquet":
        yield from _parquet_records(path)
        return
    assert encoding is not None
    with path.open(encoding=encoding, newline="" if fmt != "jsonl" else None) as handle:
        if fmt != "jsonl":
            yield from _csv_records(path, handle, "," if fmt == "csv" else "\t", settings)
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_json_object)
            except json.JSONDecodeError as exc:
                yield number, None, f"not valid JSON ({exc.msg})"
                continue
            except ValueError as exc:
                yield number, None, str(exc)
                continue
            if not isinstance(record, dict):
                yield number, None, "not a JSON object"
                continue
            yield number, record, None


def read_records(
    path: Path, settings: TableSettings
) -> tuple[str | None, Iterator[tuple[int, dict[str, Any] | None, str | None]]]:
    """The file's text encoding (None for Parquet) and its (row number, record or
    None, problem) triples; TableError for a file that cannot be read at all."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TableError(
            [f"{path}: unsupported file type {path.suffix!r} (use {', '.join(FORMATS)})"]
        )
    if not path.is_file():
        raise TableError([f"{path}: no such file"])
    encoding = None if fmt == "parquet" else _detect_encoding(path, settings.encoding)

    def guarded() -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        try:
            yield from _records(path, fmt, encoding, settings)
        except UnicodeDecodeError as exc:
            line = _bad_line(path, encoding or "utf-8")
            raise TableError(
                [
                    f"{path}:{line}: cannot decode the row as {encoding} ({exc.reason}); "
                    "pass --encoding (e.g. cp949, euc-kr, utf-8)"
                ]
            ) from None
        except LookupError as exc:
            raise TableError([f"{path}: unknown encoding {encoding!r}"]) from exc

    return encoding, guarded()
