"""Read and validate the labelled table (CSV, TSV, JSONL or Parquet).

Two streaming passes keep memory bounded for large tables: ``scan_table`` validates every
row and returns a report (problems named ``file:row``, totals per kind) plus the rows to
drop; ``iter_examples`` then yields the accepted rows in batches. Rows are numbered as a
person sees them in an editor (a CSV header is row 1; a JSONL file's first line is row 1).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from qroute.config import TableSettings
from qroute.errors import TableError
from qroute.types import Example, is_blank

__all__ = [
    "FORMATS",
    "Problem",
    "TableReport",
    "iter_examples",
    "normalise",
    "read_table",
    "row_id",
    "scan_table",
]

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
# Payload fields qroute writes itself; a table column of the same name is not copied.
RESERVED = frozenset({"text", "label", "row_id", "file", "row"})

# Fixed namespace so row ids are the same on every machine and every run.
_ROW_NAMESPACE = uuid.UUID("6f1c3c52-31a4-4a7e-9d0b-6a1f2f7c9e10")


def normalise(text: str) -> str:
    """Unicode NFC with runs of whitespace collapsed to one space and the ends trimmed."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def row_id(text: str, label: str) -> str:
    """Stable id of a labelled row: equal for the same label and ``normalise``-d text."""
    return str(uuid.uuid5(_ROW_NAMESPACE, f"{normalise(label)}\x1f{normalise(text)}"))


@dataclass(frozen=True, slots=True)
class Problem:
    # empty_text, missing_label, too_long, duplicate, conflicting_labels, rare_label,
    # unreadable, empty_table
    kind: str
    where: str  # file:row
    detail: str
    policy: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail} [{self.kind}: {self.policy}]"


@dataclass
class TableReport:
    path: Path
    encoding: str | None
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    skipped_rows: set[int] = field(default_factory=set)
    skipped_labels: set[str] = field(default_factory=set)
    # Rows of each skipped rare label.
    rare_rows: dict[str, int] = field(default_factory=dict)
    # Further tables read as if appended to this one (``qroute index --extra``), each
    # with its encoding, and their skipped rows as (position in ``extra``, row).
    extra: tuple[tuple[Path, str | None], ...] = ()
    skipped_extra: set[tuple[int, int]] = field(default_factory=set)

    @property
    def accepted(self) -> int:
        return sum(self.labels.values())

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.policy == "error"]

    def totals(self) -> Counter[str]:
        return Counter(p.kind for p in self.problems)

    def render(self, limit: int = 50) -> str:
        lines = [
            f"{self.path}: {self.rows} rows read"
            + (f" ({self.encoding})" if self.encoding else "")
            + f", {self.accepted} accepted, {len(self.labels)} labels"
        ]
        for problem in self.problems[:limit]:
            lines.append(f"  {problem}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        totals = self.totals()
        if totals:
            policies = {p.kind: p.policy for p in self.problems}
            lines.append(
                "totals: "
                + ", ".join(f"{k} {n} ({policies[k]})" for k, n in sorted(totals.items()))
            )
        else:
            lines.append("no problems found")
        return "\n".join(lines)

    def dropped(self) -> dict[str, int]:
        """Rows read but left out, by the kind of problem whose policy (``skip``) did it."""
        counts = Counter(
            p.kind for p in self.problems if p.policy == "skip" and p.kind != "rare_label"
        )
        if self.rare_rows:
            counts["rare_label"] = sum(self.rare_rows.values())
        return dict(sorted(counts.items()))

    def dropped_note(self) -> str | None:
        """One line saying how many rows were left out and why, or None."""
        dropped = self.dropped()
        if not dropped:
            return None
        why = ", ".join(f"{n} {kind} (table.on_{kind}: skip)" for kind, n in dropped.items())
        return (
            f"{self.path}: {sum(dropped.values())} of {self.rows} rows left out: {why}; "
            "set the policy to warn to keep them"
        )

    def raise_for_errors(self) -> None:
        if self.errors:
            raise TableError([str(p) for p in self.errors])


def _detect_encoding(path: Path, forced: str | None) -> str:
    if forced:
        return forced
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the 1 MiB boundary
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


def _rows(
    path: Path, settings: TableSettings
) -> tuple[str | None, Iterator[tuple[int, dict[str, Any] | None, str | None]]]:
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


def _fields(
    record: dict[str, Any], settings: TableSettings
) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """(text, label, problems as (kind, detail)) of one record."""
    problems = []
    values: dict[str, str | None] = {}
    for column, kind in (
        (settings.text_column, "empty_text"),
        (settings.label_column, "missing_label"),
    ):
        value = record.get(column)
        if column not in record:
            problems.append((kind, f"{column}: column is missing"))
            values[column] = None
        elif value is None or (isinstance(value, str) and is_blank(value)):
            problems.append((kind, f"{column}: empty"))
            values[column] = None
        elif not isinstance(value, str):
            problems.append((kind, f"{column}: expected a string, got {type(value).__name__}"))
            values[column] = None
        else:
            values[column] = normalise(value)
    return values[settings.text_column], values[settings.label_column], problems


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def scan_table(
    path: str | Path,
    settings: TableSettings | None = None,
    extra: Sequence[str | Path] = (),
) -> TableReport:
    """Validate every row of ``path`` (streaming) and report; writes nothing, raises only
    when the file itself cannot be read. Apply the report with ``iter_examples``.

    ``extra`` tables (same columns) are validated as if appended to ``path``: a text they
    label differently from an earlier row is a ``conflicting_labels`` problem, and so on."""
    settings = settings or TableSettings()
    path = Path(path)
    encoding, rows = _rows(path, settings)
    sources = [(path, rows)]
    extras = []
    for other in map(Path, extra):
        other_encoding, other_rows = _rows(other, settings)
        extras.append((other, other_encoding))
        sources.append((other, other_rows))
    report = TableReport(path=path, encoding=encoding, extra=tuple(extras))
    policy = {
        "empty_text": settings.on_empty_text,
        "missing_label": settings.on_missing_label,
        "too_long": settings.on_too_long,
        "duplicate": settings.on_duplicate,
        "conflicting_labels": settings.on_conflicting_labels,
        "rare_label": settings.on_rare_label,
        "unreadable": "error",
    }
    # 8-byte digests, not the texts: a million rows fit in ~100 MB.
    seen: dict[int, tuple[str, int, int]] = {}
    numbered = (
        (position, source, number, record, unreadable)
        for position, (source, source_rows) in enumerate(sources)
        for number, record, unreadable in source_rows
    )
    for position, source, number, record, unreadable in numbered:
        report.rows += 1
        where = f"{source}:{number}"
        found: list[tuple[str, str]] = []
        text = label = None
        if record is None:
            found.append(("unreadable", unreadable or "unreadable"))
        else:
            text, label, found = _fields(record, settings)
        if text is not None and len(text) > settings.max_text_chars:
            found.append(
                ("too_long", f"text has {len(text)} characters (limit {settings.max_text_chars})")
            )
        if text is not None and label is not None and not found:
            earlier = seen.get(_digest(text))
            if earlier is None:
                seen[_digest(text)] = (label, number, position)
            else:
                at = f"row {earlier[1]}"
                if earlier[2] != position:
                    at = f"{sources[earlier[2]][0]}:{earlier[1]}"
                if earlier[0] == label:
                    found.append(("duplicate", f"same text and label as {at}"))
                else:
                    found.append(
                        (
                            "conflicting_labels",
                            f"{settings.label_column}: text is also labelled {earlier[0]!r} "
                            f"at {at}",
                        )
                    )
        keep = True
        for kind, detail in found:
            report.problems.append(Problem(kind, where, detail, policy[kind]))
            if policy[kind] != "warn":
                keep = False
        if keep and text is not None and label is not None:
            report.labels[label] += 1
        elif position == 0:
            report.skipped_rows.add(number)
        else:
            report.skipped_extra.add((position - 1, number))
    for label, count in sorted(report.labels.items()):
        if count < settings.min_examples:
            detail = f"label {label!r} has {count} example(s) (minimum {settings.min_examples})"
            report.problems.append(Problem("rare_label", f"{path}", detail, settings.on_rare_label))
            if settings.on_rare_label == "skip":
                report.skipped_labels.add(label)
                report.rare_rows[label] = count
    for label in report.skipped_labels:
        del report.labels[label]
    if report.rows == 0 or not report.labels:
        report.problems.append(
            Problem("empty_table", f"{path}", "the table has no usable rows", "error")
        )
    return report


def iter_examples(
    report: TableReport, settings: TableSettings | None = None, batch: int = 1024
) -> Iterator[list[Example]]:
    """The accepted rows of a scanned table (and its ``extra`` tables), in batches,
    streaming from the files. Extra columns (``source``, ``lang``, ...) ride along in
    ``Example.extra``."""
    settings = settings or TableSettings()
    sources = [(report.path, report.encoding, report.skipped_rows)]
    for position, (path, encoding) in enumerate(report.extra):
        skipped = {row for at, row in report.skipped_extra if at == position}
        sources.append((path, encoding, skipped))
    chunk: list[Example] = []
    for path, encoding, skipped_rows in sources:
        for example in _examples(path, encoding, skipped_rows, report.skipped_labels, settings):
            chunk.append(example)
            if len(chunk) >= batch:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _examples(
    path: Path,
    encoding: str | None,
    skipped_rows: set[int],
    skipped_labels: set[str],
    settings: TableSettings,
) -> Iterator[Example]:
    _, rows = _rows(
        path,
        settings if settings.encoding else settings.model_copy(update={"encoding": encoding}),
    )
    for number, record, _ in rows:
        if number in skipped_rows or record is None:
            continue
        text, label, _problems = _fields(record, settings)
        if text is None or label is None or label in skipped_labels:
            continue
        extra = {
            key: value
            for key, value in record.items()
            if key not in (settings.text_column, settings.label_column)
            and key not in RESERVED
            and isinstance(value, str | int | float | bool)
        }
        yield Example(
            text=text,
            label=label,
            row_id=row_id(text, label),
            source=str(path),
            line=number,
            extra=extra,
        )


def read_table(path: str | Path, settings: TableSettings | None = None) -> list[Example]:
    """Every accepted row of ``path``; raises TableError listing every row whose problem's
    policy is ``error``."""
    settings = settings or TableSettings()
    report = scan_table(path, settings)
    report.raise_for_errors()
    return [example for chunk in iter_examples(report, settings) for example in chunk]
