"""Read and validate the labelled table (CSV, TSV, JSONL or Parquet) into Examples.

Every problem is collected and reported together as ``file:row: field: reason``;
rows are numbered as a person sees them in an editor (a CSV header is row 1).
"""

from __future__ import annotations

import csv
import json
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qroute.config import TableSettings
from qroute.errors import TableError
from qroute.types import Example

__all__ = ["FORMATS", "normalise", "read_table", "row_id"]

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}

# Fixed namespace so row ids are the same on every machine and every run.
_ROW_NAMESPACE = uuid.UUID("6f1c3c52-31a4-4a7e-9d0b-6a1f2f7c9e10")


def normalise(text: str) -> str:
    """Unicode NFC with runs of whitespace collapsed to one space and the ends trimmed."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def row_id(text: str, label: str) -> str:
    """Stable id of a labelled row: equal for the same label and ``normalise``-d text."""
    return str(uuid.uuid5(_ROW_NAMESPACE, f"{normalise(label)}\x1f{normalise(text)}"))


def _records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (row number, record or None, problem) for each data row of the file."""
    if fmt in ("csv", "tsv"):
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="," if fmt == "csv" else "\t")
            for record in reader:
                # line_num is the line on which the record ended: a quoted
                # multi-line cell still points at its row.
                yield reader.line_num, dict(record), None
    elif fmt == "jsonl":
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, None, f"not valid JSON ({exc.msg})"
                    continue
                if not isinstance(record, dict):
                    yield number, None, "not a JSON object"
                    continue
                yield number, record, None
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise TableError(
                [f"{path}: reading Parquet needs pyarrow: pip install 'qroute[parquet]'"]
            ) from exc
        table = pq.read_table(path)
        for number, record in enumerate(table.to_pylist(), start=1):
            yield number, record, None


def read_table(path: str | Path, settings: TableSettings | None = None) -> list[Example]:
    """Read every row of ``path`` into Examples, or raise TableError listing every bad row.

    Checks: the text and label columns exist and are non-empty strings, and no text
    (after ``normalise``) appears under two labels. A row repeated with the same label
    is kept once: it would be the same point in the index.
    """
    settings = settings or TableSettings()
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TableError(
            [f"{path}: unsupported file type {path.suffix!r} (use {', '.join(FORMATS)})"]
        )
    if not path.is_file():
        raise TableError([f"{path}: no such file"])

    text_col, label_col = settings.text_column, settings.label_column
    problems: list[str] = []
    examples: dict[str, Example] = {}
    seen_text: dict[str, Example] = {}
    try:
        for number, record, problem in _records(path, fmt):
            where = f"{path}:{number}"
            if record is None:
                problems.append(f"{where}: {problem}")
                continue
            fields: dict[str, str] = {}
            for column in (text_col, label_col):
                value = record.get(column)
                if column not in record:
                    problems.append(f"{where}: {column}: column is missing")
                elif not isinstance(value, str):
                    problems.append(
                        f"{where}: {column}: expected a string, got {type(value).__name__}"
                    )
                elif not value.strip():
                    problems.append(f"{where}: {column}: empty")
                else:
                    fields[column] = value
            if len(fields) < 2:
                continue
            text, label = normalise(fields[text_col]), normalise(fields[label_col])
            example = Example(
                text=text, label=label, row_id=row_id(text, label), source=str(path), line=number
            )
            earlier = seen_text.get(text)
            if earlier is not None and earlier.label != label:
                problems.append(
                    f"{where}: {label_col}: text is also labelled {earlier.label!r} at row "
                    f"{earlier.line} (conflicting labels)"
                )
                continue
            seen_text.setdefault(text, example)
            examples.setdefault(example.row_id, example)
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text (byte offset {exc.start}): {exc.reason}")
    if problems:
        raise TableError(problems)
    if not examples:
        raise TableError([f"{path}: the table has no rows"])
    return list(examples.values())
