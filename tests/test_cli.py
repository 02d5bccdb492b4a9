"""The README's main command and the CLI's failure modes, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qroute.testing import TinyModels
from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QROUTE_", "HF_HUB_OFFLINE"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no model cached from elsewhere
    env["QROUTE_STORE__LOCATION"] = str(tmp_path / "store")
    env["QROUTE_SERVER__METRICS_PORT"] = "0"
    env.update(extra)
    return env


def test_demo_runs_end_to_end_with_local_models(tmp_path: Path, tiny_models: TinyModels) -> None:
    address = f"127.0.0.1:{_free_port()}"
    env = _env(
        tmp_path,
        QROUTE_ENCODER__MODEL=str(tiny_models.encoder),
        QROUTE_NLI__MODEL=str(tiny_models.nli),
        QROUTE_SERVER__BIND=address,
    )
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "published examples_v1: " in out
    assert "SERVING" in out
    assert "코스닥 지수 알려줘\n  -> 금융  [KNN" in out  # a row of the table
    assert "why: kNN: best similarity" in out
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["text"] == "내일 부산 비 와?"
    assert answer["path"].startswith("DECISION_PATH_")
    assert answer["index_version"] == "examples_v1"
    assert not (tmp_path / "store" / "examples" / "examples_v2").exists()


@pytest.mark.parametrize(
    ("command", "model", "variable", "without"),
    [
        (
            ["index", "examples/queries.csv"],
            "jhgan/ko-sroberta-multitask",
            "QROUTE_ENCODER__MODEL",
            "QROUTE_RETRIEVAL__MODE=lexical",
        ),
        (
            ["serve"],
            "Huffon/klue-roberta-base-nli",
            "QROUTE_NLI__MODEL",
            "QROUTE_ZERO_SHOT__METHOD=off",
        ),
    ],
)
def test_unreachable_hub_model_fails_fast_and_says_how_to_fix_it(
    tmp_path: Path,
    tiny_models: TinyModels,
    command: list[str],
    model: str,
    variable: str,
    without: str,
) -> None:
    extra = {"QROUTE_SERVER__BIND": f"127.0.0.1:{_free_port()}"}
    if command == ["serve"]:
        extra["QROUTE_ENCODER__MODEL"] = str(
            tiny_models.encoder
        )  # so the NLI model is the one missing
    result = subprocess.run(
        [sys.executable, "-m", "qroute", *command, "--config", "examples/qroute.yaml"],
        cwd=ROOT,
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert model in result.stderr
    assert variable in result.stderr
    assert without in result.stderr  # the setting under which this model is not needed
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store" / "examples" / "CURRENT").exists()


def test_missing_local_model_directory_is_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qroute",
            "index",
            "examples/queries.csv",
            "--config",
            "examples/qroute.yaml",
        ],
        cwd=ROOT,
        env=_env(tmp_path, QROUTE_ENCODER__MODEL=str(tmp_path / "nowhere")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"encoder model directory '{tmp_path / 'nowhere'}' does not exist" in result.stderr


def test_bad_table_row_is_named_by_the_cli(tmp_path: Path, tiny_models: TinyModels) -> None:
    table = tmp_path / "t.csv"
    table.write_text("text,label\n코스닥 지수 알려줘,금융\n서귀포 맛집 알려줘,\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "qroute", "index", str(table), "--config", "examples/qroute.yaml"],
        cwd=ROOT,
        env=_env(tmp_path, QROUTE_ENCODER__MODEL=str(tiny_models.encoder)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"{table}:3: label: empty" in result.stderr


def test_eval_and_tune_commands_write_their_reports(
    tmp_path: Path, tiny_models: TinyModels
) -> None:
    from ruamel.yaml import YAML

    config = tmp_path / "qroute.yaml"
    config.write_text(
        "# my router\nrouter:\n  k: 5   # labels per query\nstore:\n  collection: cli\n"
        f"zero_shot:\n  method: embedding\nencoder:\n  model: {tiny_models.encoder}\n",
        encoding="utf-8",
    )
    env = _env(tmp_path)
    base = [sys.executable, "-m", "qroute"]
    table = str(ROOT / "examples" / "queries.csv")
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 300}
    indexed = subprocess.run([*base, "index", table, "--config", str(config)], **run)  # type: ignore[call-overload]
    assert indexed.returncode == 0, indexed.stderr

    held = str(ROOT / "examples" / "queries_eval.csv")
    evaluated = subprocess.run([*base, "eval", held, "--config", str(config), "--out", "ev"], **run)  # type: ignore[call-overload]
    assert evaluated.returncode == 0, evaluated.stderr
    assert "in-scope accuracy" in evaluated.stdout and "macro-F1" in evaluated.stdout
    report = json.loads((tmp_path / "ev" / "eval.json").read_text(encoding="utf-8"))
    assert report["n"] == 80 and set(report["per_label"]) == {
        "금융",
        "영화",
        "장소",
        "날씨",
        "음악",
        "쇼핑",
        "스포츠",
        "뉴스",
        "건강",
        "교통",
    }
    for png in ("confusion.png", "threshold.png"):
        assert (tmp_path / "ev" / png).read_bytes()[:4] == b"\x89PNG"

    tuned = subprocess.run(
        [*base, "tune", held, "--config", str(config), "--out", "tu", "--write"],
        **run,  # type: ignore[call-overload]
    )
    assert tuned.returncode == 0, tuned.stderr
    assert "wrote the tuned values into" in tuned.stdout
    text = config.read_text(encoding="utf-8")
    assert "# my router" in text and "# labels per query" in text
    written = YAML(typ="safe", pure=True).load(text)
    fingerprint = written["tuned"]["encoder"]
    assert re.fullmatch(r"encoder@[0-9a-f]{16}\|pipe=[0-9a-f]{8}\|dim=32\|.*", fingerprint)
    assert written["tuned"]["index_version"] == "cli_v1"
    assert 0.0 <= written["router"]["similarity_threshold"] <= 1.0
    assert (tmp_path / "tu" / "tradeoff.png").exists()


def test_lexical_demo_runs_with_no_model_and_no_network(tmp_path: Path) -> None:
    """The README's quickstart without models: nothing to download, nothing configured."""
    address = f"127.0.0.1:{_free_port()}"
    env = _env(tmp_path, QROUTE_SERVER__BIND=address, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo.sh"), "examples/qroute-lexical.yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "published examples_lexical_v1: " in out
    assert "코스닥 지수 알려줘\n  -> 금융  [KNN" in out
    assert "오펜하이머 등장인물 알려줘\n  -> 영화  [KNN" in out
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["index_version"] == "examples_lexical_v1"
    assert not (tmp_path / "hf-home").exists()  # nothing was fetched or cached


def test_typos_command_writes_a_labelled_typo_set(tmp_path: Path) -> None:
    from qroute.cli import main

    out = tmp_path / "typos.jsonl"
    assert (
        main(
            ["typos", str(ROOT / "examples" / "queries_eval.csv"), "--out", str(out), "--seed", "1"]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {r["kind"] for r in rows} == {
        "space_removed",
        "space_added",
        "jamo_replaced",
        "batchim_dropped",
    }
    assert all(r["text"] != r["original"] and r["label"] for r in rows)


def test_eval_says_how_many_rows_it_left_out_and_why(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "qroute"]
    config = str(ROOT / "examples" / "qroute-lexical.yaml")
    run = {"cwd": tmp_path, "env": _env(tmp_path), "capture_output": True, "text": True}
    table = str(ROOT / "examples" / "queries.csv")
    indexed = subprocess.run([*base, "index", table, "--config", config], **run)  # type: ignore[call-overload]
    assert indexed.returncode == 0, indexed.stderr
    held = (ROOT / "examples" / "queries_eval.csv").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "eval.csv"
    data.write_text("\n".join([*held, held[1], held[2], held[1]]) + "\n", encoding="utf-8")
    evaluated = subprocess.run(  # type: ignore[call-overload]
        [*base, "eval", str(data), "--config", config, "--out", "ev"], **run
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert (
        f"note: {data}: 3 of 83 rows left out: 3 duplicate (table.on_duplicate: skip)"
        in evaluated.stderr
    )
    report = json.loads((tmp_path / "ev" / "eval.json").read_text(encoding="utf-8"))
    assert report["n"] == 80
    assert report["table"] == {"rows": 83, "evaluated": 80, "left_out": {"duplicate": 3}}


def test_tune_reports_the_figures_eval_measures_under_min_confidence(tmp_path: Path) -> None:
    """``router.min_confidence`` refuses answers through the calibration ``tune`` fits: the
    figures ``tune --write`` records are the ones ``eval`` then measures on the same rows
    (they were those of the sweep, which leaves it out)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    data = yaml.load((ROOT / "examples" / "qroute-lexical.yaml").read_text(encoding="utf-8"))
    data["router"]["min_confidence"] = 0.9
    config = tmp_path / "qroute.yaml"
    yaml.dump(data, config)
    base = [sys.executable, "-m", "qroute"]
    run = {"cwd": tmp_path, "env": _env(tmp_path), "capture_output": True, "text": True}
    table = str(ROOT / "examples" / "queries.csv")
    indexed = subprocess.run([*base, "index", table, "--config", str(config)], **run)  # type: ignore[call-overload]
    assert indexed.returncode == 0, indexed.stderr
    held = str(ROOT / "examples" / "queries_eval.csv")
    tuned = subprocess.run(  # type: ignore[call-overload]
        [*base, "tune", held, "--config", str(config), "--out", "tu", "--write", "--folds", "0"],
        **run,
    )
    assert tuned.returncode == 0, tuned.stderr
    promised = yaml.load(config)["tuned"]["figures"]
    evaluated = subprocess.run(  # type: ignore[call-overload]
        [*base, "eval", held, "--config", str(config), "--out", "ev"], **run
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text(encoding="utf-8"))
    assert promised["coverage"] < 1.0  # min_confidence refused some answers
    assert promised["accuracy"] == pytest.approx(report["accuracy"], abs=1e-4)
    assert promised["coverage"] == pytest.approx(report["coverage"], abs=1e-4)


def test_index_shows_progress_through_every_long_pass(tmp_path: Path) -> None:
    """Validation and the lexical term count are passes over the whole table too: each has
    its bar, not only the write (minutes of silence on a table of millions of rows)."""
    base = [sys.executable, "-m", "qroute"]
    config = str(ROOT / "examples" / "qroute-lexical.yaml")
    run = {"cwd": tmp_path, "env": _env(tmp_path), "capture_output": True, "text": True}
    table = str(ROOT / "examples" / "queries.csv")
    indexed = subprocess.run([*base, "index", table, "--config", config], **run)  # type: ignore[call-overload]
    assert indexed.returncode == 0, indexed.stderr
    for bar in ("validating: ", "counting terms: ", "indexing examples_lexical_v1: "):
        assert bar in indexed.stderr, indexed.stderr
    quiet = subprocess.run(  # type: ignore[call-overload]
        [*base, "index", table, "--config", config, "--full", "--no-progress"], **run
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "validating" not in quiet.stderr and "counting terms" not in quiet.stderr
