"""``qroute review list --since``: a time as people write it selects the rows recorded at
or after it; what is no time is refused, not compared as a string that matches nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from qroute.cli import main
from qroute.routing.review import ReviewRecord
from qroute.routing.review_store import ReviewStore


def _queue(tmp_path: Path) -> Path:
    path = tmp_path / "review.sqlite"
    config = tmp_path / "qroute.yaml"
    YAML(typ="safe", pure=True).dump({"review": {"enabled": True, "path": str(path)}}, config)
    ReviewStore(path).add(
        [
            ReviewRecord(
                kind="answer",
                reasons=("NO_MATCH",),
                request_id=text,
                text=text,
                text_hash=None,
                created_at=at,
            )
            for text, at in (
                ("early", "2026-12-01T00:30:00.000+00:00"),
                ("late", "2026-12-01T02:00:00.000+00:00"),
            )
        ]
    )
    return config


def _listed(config: Path, since: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    code = main(["review", "list", "--since", since, "--json", "--config", str(config)])
    assert code == 0
    return [row["text"] for row in json.loads(capsys.readouterr().out)]


def test_since_reads_an_offset_and_a_bare_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _queue(tmp_path)
    # 10:00 in Seoul is 01:00 UTC: only the later row.
    assert _listed(config, "2026-12-01T10:00+09:00", capsys) == ["late"]
    assert _listed(config, "2026-12-01", capsys) == ["late", "early"]


def test_since_that_is_no_time_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _queue(tmp_path)
    code = main(["review", "list", "--since", "2026/12/01", "--config", str(config)])
    assert code == 2
    assert "--since '2026/12/01'" in capsys.readouterr().err
