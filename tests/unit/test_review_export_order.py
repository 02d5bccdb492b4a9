"""``qroute review export`` when one text was decided more than once: the later decision
is what the exported table says (docs/review.md), including a later "none of these"."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from qroute.cli import main
from qroute.routing.review import ReviewRecord
from qroute.routing.review_store import ReviewStore

TEXT = "환율 알려줘"


def _setup(tmp_path: Path, rows: int) -> tuple[Path, ReviewStore]:
    path = tmp_path / "review.sqlite"
    config = tmp_path / "qroute.yaml"
    YAML(typ="safe", pure=True).dump({"review": {"enabled": True, "path": str(path)}}, config)
    store = ReviewStore(path)
    store.add(
        [
            ReviewRecord(
                kind="answer", reasons=("NO_MATCH",), request_id=f"r{i}", text=TEXT, text_hash=None
            )
            for i in range(rows)
        ]
    )
    return config, store


def _exported(tmp_path: Path, config: Path) -> list[dict[str, str]]:
    out = tmp_path / "learned.csv"
    assert main(["review", "export", "--out", str(out), "--config", str(config)]) == 0
    with out.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _decide(config: Path, row_id: int, *flags: str) -> None:
    assert main(["review", "accept", str(row_id), *flags, "--config", str(config)]) == 0
    time.sleep(0.01)  # reviewed_at keeps milliseconds


def test_a_later_decision_on_an_older_row_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, store = _setup(tmp_path, 2)
    older, newer = sorted(r.id for r in store.rows())
    _decide(config, newer, "--label", "뉴스")
    _decide(config, older, "--label", "금융")  # the reviewer changed their mind
    assert _exported(tmp_path, config) == [{"text": TEXT, "label": "금융"}]


def test_a_later_none_of_these_removes_the_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, store = _setup(tmp_path, 2)
    first, second = sorted(r.id for r in store.rows())
    _decide(config, first, "--label", "뉴스")
    _decide(config, second, "--none")
    assert _exported(tmp_path, config) == []
