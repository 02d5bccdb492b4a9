"""``qroute eval`` and ``qroute typos`` on the inputs that used to break them: a
confusion matrix of many labels, labels with dollar signs, a write cut short, an output
folder that does not exist yet, and the list of files eval says it wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qroute.cli import main
from qroute.evaluation.metrics import metrics
from qroute.evaluation.plots import plot_confusion
from tests.conftest import ROOT

LEXICAL = str(ROOT / "examples" / "qroute-lexical.yaml")
EVAL_TABLE = str(ROOT / "examples" / "queries_eval.csv")


def _eval(out: str) -> int:
    return main(["eval", EVAL_TABLE, "--config", LEXICAL, "--out", out, "--no-progress", "--json"])


def test_a_confusion_matrix_of_many_labels_is_a_picture_of_bounded_size(tmp_path: Path) -> None:
    """The figure grew 0.45 inch per label: 200 labels were a 9,000-pixel square (GBs of
    memory), 1,500 got the process killed. Past 40 labels no tick is drawn anyway."""
    from PIL import Image

    labels = [f"intent-{i}" for i in range(100)]
    result = metrics(labels, labels[1:] + labels[:1], ["KNN"] * len(labels))
    path = plot_confusion(result, tmp_path / "confusion.png")
    with Image.open(path) as image:
        image.verify()
        assert max(image.size) <= 2200, image.size


def test_labels_with_dollar_signs_are_drawn_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matplotlib reads text between two ``$`` as mathtext: ``$_$`` was a ValueError
    after eval.json was written, so eval stopped without its pictures."""
    from qroute.evaluation import plots

    drawn: list[Any] = []
    save = plots._save

    def keep(figure: Any, path: str | Path) -> None:
        drawn.append(figure)
        save(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    labels = ["$_$", "US$/KR$", "cost $x^$"]
    result = metrics(labels, labels, ["KNN"] * len(labels))
    path = plot_confusion(result, tmp_path / "confusion.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    matrix = drawn[0].axes[0]
    assert [t.get_text() for t in matrix.get_yticklabels()] == sorted(labels)
    assert [t.get_text() for t in matrix.get_xticklabels()] == [*sorted(labels), "(none)"]


def test_eval_lists_every_file_it_wrote(
    lexical_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _eval("ev") == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert sorted(Path(f).name for f in files) == sorted(p.name for p in Path("ev").iterdir())
    assert "ev/threshold.json" in files


def _cut_short(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A full disk while a file whose name holds ``name`` is written: the write fails
    when its data is flushed to disk (where a full disk surfaces)."""
    import os

    fsync = os.fsync

    def full_disk(fd: int) -> None:
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)


def test_an_eval_cut_short_while_writing_leaves_the_last_report_whole(
    lexical_index: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _eval("ev") == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in Path("ev").glob("*.json")}
    with monkeypatch.context() as patch:
        _cut_short(patch, "eval.json")
        assert _eval("ev") == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in Path("ev").glob("*.json")} == before
    assert sorted(p.name for p in Path("ev").iterdir()) == sorted(
        ["eval.json", "threshold.json", "confusion.png", "threshold.png", "reliability.png"]
    )


def test_typos_into_a_folder_that_does_not_exist_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sets" / "ko" / "typos.jsonl"
    assert main(["typos", EVAL_TABLE, "--out", str(out)]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["text"] != r["original"] for r in rows)
    assert f"to {out}" in capsys.readouterr().out


def test_typos_stopped_midway_leave_the_previous_set_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C on a large table used to leave the first rows only: a smaller typo set that
    reads as complete, in place of the one before."""
    from qroute.evaluation import typos

    out = tmp_path / "typos.jsonl"
    assert main(["typos", EVAL_TABLE, "--out", str(out)]) == 0
    previous = out.read_bytes()
    typo_set = typos.typo_set

    def interrupted(*args: Any, **kwargs: Any) -> Iterator[typos.Typo]:
        for i, typo in enumerate(typo_set(*args, **kwargs)):
            if i == 10:
                raise KeyboardInterrupt
            yield typo

    monkeypatch.setattr(typos, "typo_set", interrupted)
    assert main(["typos", EVAL_TABLE, "--out", str(out), "--seed", "7"]) == 130
    assert out.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["typos.jsonl"]
