"""``qroute tune --write`` never leaves the config half written (a router polling it would
hot-reload what it finds: an empty file is the defaults), and ``qroute tune`` on a single
row refuses cross-validation with a message instead of a traceback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qroute.config import RouterSettings, ZeroShotSettings, load_settings
from qroute.evaluation.crossval import cross_validate
from qroute.evaluation.precompute import Precomputed
from qroute.evaluation.tune import Choice, sweep
from qroute.evaluation.tuned import write_tuned
from qroute.types import Group, Hit

CONFIG = "# my router\nrouter:\n  k: 10  # labels per query\n  similarity_threshold: 0.3\n"
CHOICE = Choice(3, 0.42, 0.0, 0.5, {}, 0.9, 0.9, None, 1.0, 0.0)
ROUTER = RouterSettings(k=3, group_size=1, similarity_threshold=0.5)
ZS = ZeroShotSettings(method="off")


def _write(path: Path) -> None:
    write_tuned(path, CHOICE, encoder="e", index_version="v", objective="accuracy", data="d")


def test_a_write_that_fails_midway_leaves_the_config_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ruamel.yaml import YAML

    path = tmp_path / "qroute.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    dump = YAML.dump

    def full_disk(self: YAML, data: object, stream: object) -> None:
        dump(self, {"router": {"k": 3}}, stream)  # part of the document is out
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(YAML, "dump", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _write(path)
    assert path.read_text(encoding="utf-8") == CONFIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qroute.yaml"]  # no temp file left


def test_the_write_keeps_the_files_mode_and_a_symlinked_config(tmp_path: Path) -> None:
    target = tmp_path / "real" / "qroute.yaml"
    target.parent.mkdir()
    target.write_text(CONFIG, encoding="utf-8")
    os.chmod(target, 0o640)
    link = tmp_path / "qroute.yaml"
    link.symlink_to(target)
    _write(link)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    text = target.read_text(encoding="utf-8")
    assert "# my router" in text and "# labels per query" in text
    assert load_settings(link).router.similarity_threshold == 0.42


def test_a_new_config_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    _write(path)
    assert load_settings(path).router.k == 3


def _pre(n: int) -> Precomputed:
    groups = [[Group("a", (Hit(f"a{i}", "", "a", 0.8),))] for i in range(n)]
    return Precomputed(["a"] * n, groups, [{} for _ in range(n)], "", [])


def test_no_rows_to_choose_on_is_not_a_crash() -> None:
    # A fold of one row leaves the other folds nothing to choose on.
    assert sweep(_pre(0), ROUTER, ZS).best.accuracy == 0.0
    with pytest.raises(ValueError, match="at least 2 rows"):
        cross_validate(_pre(1), ROUTER, ZS, folds=5)


def test_tune_on_one_row_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qroute.cli import tuning

    monkeypatch.setattr(tuning, "_tune_rows", lambda settings, args: ("one.csv", []))

    async def searched(settings: object, args: object, examples: object) -> object:
        return tuning._Searched(_pre(1), "v1", "e")

    monkeypatch.setattr(tuning, "_search", searched)
    from qroute.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("retrieval:\n  mode: lexical\n", encoding="utf-8")
    code = main(["tune", "one.csv", "--config", str(config), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--folds 5" in err and "--folds 0" in err
