"""Read and validate the labelled table (CSV, TSV, JSONL or Parquet).

Two streaming passes keep memory bounded for large tables: ``scan_table`` validates every
row and returns a report (problems named ``file:row``, totals per kind) plus the rows to
drop; ``iter_examples`` then yields the accepted rows in batches. Rows are numbered as a
person sees them in an editor (a CSV header is row 1; a JSONL file's first line is row 1).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from qroute.config import TableSettings
from qroute.errors import TableError
from qroute.tableformats import read_records
from qroute.types import Example, is_blank

__all__ = [
    "Problem",
    "TableReport",
    "iter_examples",
    "normalise",
    "read_table",
    "row_id",
    "scan_table",
]


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


_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_text(record: dict[str, Any]) -> list[tuple[str, str]]:
    """An ``unreadable`` problem for each field holding an unpaired surrogate (what a
    tool writes when it cuts an emoji's UTF-16 pair in half, as ``\\ud83d`` in JSON): it
    is no Unicode text, and would fail the row's id and the store's write later."""
    problems = []
    for column, value in record.items():
        if isinstance(value, str) and not value.isascii():
            found = _SURROGATE.search(value)
            if found is not None:
                problems.append(
                    (
                        "unreadable",
                        f"{column}: character {found.start() + 1} is an unpaired surrogate "
                        f"({found.group()!a}), not text: fix or remove it where the file "
                        "was written",
                    )
                )
    return problems


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _repeated(
    seen: dict[int, tuple[str, int, int]],
    text: str,
    label: str,
    at: tuple[int, int],
    sources: Sequence[tuple[Path, object]],
    settings: TableSettings,
) -> list[tuple[str, str]]:
    """A ``duplicate`` or ``conflicting_labels`` problem when an earlier row (of this
    table, or of an earlier one in ``sources``) has the same text; else remembers it.
    ``at``: (position in ``sources``, row number)."""
    earlier = seen.get(_digest(text))
    if earlier is None:
        seen[_digest(text)] = (label, at[1], at[0])
        return []
    where = f"row {earlier[1]}"
    if earlier[2] != at[0]:
        where = f"{sources[earlier[2]][0]}:{earlier[1]}"
    if earlier[0] == label:
        return [("duplicate", f"same text and label as {where}")]
    return [
        (
            "conflicting_labels",
            f"{settings.label_column}: text is also labelled {earlier[0]!r} at {where}",
        )
    ]


def scan_table(
    path: str | Path,
    settings: TableSettings | None = None,
    extra: Sequence[str | Path] = (),
    *,
    progress: bool = False,
) -> TableReport:
    """Validate every row of ``path`` (streaming) and report; writes nothing, raises only
    when the file itself cannot be read. Apply the report with ``iter_examples``.
    ``progress``: a bar of the rows read (no total: the file is streamed).

    ``extra`` tables (same columns) are validated as if appended to ``path``: a text they
    label differently from an earlier row is a ``conflicting_labels`` problem, and so on."""
    settings = settings or TableSettings()
    path = Path(path)
    encoding, rows = read_records(path, settings)
    sources = [(path, rows)]
    extras = []
    for other in map(Path, extra):
        other_encoding, other_rows = read_records(other, settings)
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
    bar = tqdm(numbered, unit="row", desc="validating", disable=not progress)
    for position, source, number, record, unreadable in bar:
        report.rows += 1
        where = f"{source}:{number}"
        found: list[tuple[str, str]] = []
        text = label = None
        if record is None:
            found.append(("unreadable", unreadable or "unreadable"))
        else:
            text, label, found = _fields(record, settings)
            found += _not_text(record)
        if text is not None and len(text) > settings.max_text_chars:
            found.append(
                ("too_long", f"text has {len(text)} characters (limit {settings.max_text_chars})")
            )
        # A row kept despite its problems (their policy is warn) is one a later row can
        # repeat or contradict; one dropped is not.
        if text is not None and label is not None and all(policy[k] == "warn" for k, _ in found):
            found += _repeated(seen, text, label, (position, number), sources, settings)
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
    _, rows = read_records(
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
            and isinstance(value, str | int | float | bool)
            # NaN is what pandas and json.dumps write for a missing number: left out like
            # a null. Qdrant cannot store it (nor an infinity), and the write would fail.
            and not (isinstance(value, float) and not math.isfinite(value))
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
