"""The CLI as a user meets it: --version, help on every flag, -v/-q in either position,
texts from stdin or a file, one JSON document with --json, tables aligned for Korean."""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from qroute.cli import _parser, main
from qroute.cli.common import render_table
from qroute.cli.router import _texts
from qroute.types import display_width
from tests.conftest import ROOT

LEXICAL = str(ROOT / "examples" / "qroute-lexical.yaml")


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield "qroute", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_flag_of_every_command_has_help() -> None:
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in _subparsers(_parser())
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("qroute ") and any(ch.isdigit() for ch in out)


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["-v", "index", "--list"], True, False),
        (["index", "--list", "-v"], True, False),
        (["index", "-q", "--list"], False, True),
        (["-q", "index", "--list"], False, True),
        (["index", "--list"], False, False),
    ],
)
def test_verbosity_before_or_after_the_command(argv: list[str], verbose: bool, quiet: bool) -> None:
    args = _parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_classify_reads_texts_from_stdin_and_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = tmp_path / "texts.txt"
    listed.write_text("코스피 지수\n\n  \n내일 날씨\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO("영화 추천\r\n음악 틀어줘\n"))
    args = argparse.Namespace(texts=["첫 문장", "-"], file=str(listed))
    assert _texts(args) == ["첫 문장", "영화 추천", "음악 틀어줘", "코스피 지수", "내일 날씨"]


def test_classify_without_texts_says_how_to_give_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--file", "/dev/null"]) == 2
    assert "TEXT, - (one text per line on stdin) or --file" in capsys.readouterr().err


def test_a_table_of_korean_cells_lines_up_by_display_width() -> None:
    table = render_table(
        ("label", "rows"), [("금융", "12"), ("weather", "3"), ("영화 리뷰", "100")], right="1"
    )
    widths = {display_width(line) for line in table.splitlines()}
    assert len(widths) == 1, table


def test_index_list_names_its_collection_and_prints_json(
    lexical_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", "--list", "--config", LEXICAL]) == 0
    out = capsys.readouterr().out
    assert f"collection 'examples_lexical' in {lexical_index / 'store'}" in out
    assert main(["index", "--list", "--config", LEXICAL, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["collection"] == "examples_lexical"
    assert [v["name"] for v in listed["versions"]] == ["examples_lexical_v1"]


def test_eval_and_tune_print_one_json_document(
    lexical_index: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    data = str(ROOT / "examples" / "queries_eval.csv")
    with caplog.at_level(logging.INFO):
        code = main(["eval", data, "--config", LEXICAL, "--out", "ev", "--no-progress", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 80 and "금융" in report["per_label"]
    assert all(Path(f).exists() for f in report["files"])
    assert main(["tune", data, "--config", LEXICAL, "--no-progress", "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["objective"] == "accuracy"
    assert 0 <= tuned["figures"]["accuracy"] <= 1
