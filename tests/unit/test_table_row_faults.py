"""Table rows that used to crash the job, or were reported as something they are not."""

from __future__ import annotations

import json
from pathlib import Path

from qroute.config import TableSettings
from qroute.table import iter_examples, scan_table

ONE = TableSettings(min_examples=1)


def test_an_unpaired_surrogate_is_a_problem_of_its_row_not_a_crash(tmp_path: Path) -> None:
    # What a JavaScript tool writes when it cuts an emoji's surrogate pair in half.
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"text": "ok row", "label": "a"}\n{"text": "cut emoji \\ud83d", "label": "a"}\n',
        encoding="utf-8",
    )
    report = scan_table(path, ONE)
    [problem] = report.errors
    assert problem.where == f"{path}:2"
    assert problem.detail.startswith("text: ") and "surrogate" in problem.detail
    assert report.accepted == 1


def test_a_bom_under_a_forced_utf8_is_not_a_missing_column(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts with a BOM; --encoding utf-8 must still read the header.
    path = tmp_path / "t.csv"
    path.write_bytes("\ufefftext,label\nhello,a\nworld,a\n".encode())
    report = scan_table(path, TableSettings(encoding="utf-8", min_examples=1))
    assert report.problems == [] and report.accepted == 2


def test_a_small_cp949_file_ending_in_its_first_korean_character_is_detected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\nhello there,인\n".encode("cp949"))
    report = scan_table(path, ONE)
    assert report.encoding == "cp949" and report.labels == {"인": 1}


def test_nan_in_an_extra_column_is_left_out_of_the_payload(tmp_path: Path) -> None:
    # json.dumps writes NaN for a missing float (pandas' to_dict, for one); Qdrant cannot
    # store it in a payload, so it used to fail the write after every row was encoded.
    path = tmp_path / "t.jsonl"
    rows = [{"text": "a", "label": "x", "score": float("nan")}, {"text": "b", "label": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = scan_table(path, ONE)
    [examples] = list(iter_examples(report, ONE))
    assert "score" not in examples[0].extra


def test_a_kept_warned_row_still_conflicts_with_a_later_one(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\nsame long text,a\nsame long text,b\n", encoding="utf-8")
    settings = TableSettings(min_examples=1, max_text_chars=5, on_too_long="warn")
    kinds = [p.kind for p in scan_table(path, settings).problems]
    assert "conflicting_labels" in kinds
