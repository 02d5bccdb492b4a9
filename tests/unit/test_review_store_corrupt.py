"""A review.path that is not a SQLite file (a torn copy, a wrong path): the router and
`qroute review` say which file and setting, in one line, rather than a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from qroute.cli import main
from qroute.errors import ConfigError
from qroute.routing.review_store import ReviewStore


def _garbage(path: Path) -> Path:
    path.write_bytes(b"not a database at all " * 20)
    return path


def test_opening_a_file_that_is_not_a_database_names_it(tmp_path: Path) -> None:
    path = _garbage(tmp_path / "review.sqlite")
    with pytest.raises(ConfigError, match=r"review\.path") as raised:
        ReviewStore(path)
    assert str(path) in str(raised.value)


def test_qroute_review_reports_it_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _garbage(tmp_path / "review.sqlite")
    config = tmp_path / "qroute.yaml"
    YAML(typ="safe", pure=True).dump({"review": {"enabled": True, "path": str(path)}}, config)
    assert main(["review", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "review.path" in err and "Traceback" not in err
