"""What the CLI says when the environment or an input file is unusable: one line that
names the file or setting, exit code 2, never a traceback (lexical mode: no model)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cli import _env, _free_port

LEXICAL = str(ROOT / "examples" / "qroute-lexical.yaml")
TABLE = str(ROOT / "examples" / "queries.csv")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")
# A progress bar's redraw (tqdm: "validating: 313row [00:00, ...row/s]"), or the blank
# between two: what a long pass prints before the error, not part of it.
PROGRESS_LINE = re.compile(r"^$|^[a-z][\w ]*: .*\[\d\d:\d\d.*\]$")


def _qroute(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"QROUTE_SERVER__BIND": f"127.0.0.1:{_free_port()}", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "qroute", *args],
        cwd=ROOT,
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """The one error line of a run that failed as a user should see it fail."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [
        line
        for line in result.stderr.splitlines()
        if not LOG_LINE.match(line) and not PROGRESS_LINE.match(line)
    ]
    assert len(errors) == 1, result.stderr
    [line] = errors
    assert line.startswith("qroute: ")
    for name in names:
        assert name in line
    return line


@pytest.mark.parametrize("command", [["index", TABLE], ["serve"]])
def test_a_store_location_that_cannot_be_created_is_named(
    tmp_path: Path, command: list[str]
) -> None:
    result = _qroute(tmp_path, *command, "--config", LEXICAL, QROUTE_STORE__LOCATION="/proc/x")
    line = _one_line_error(result, "store.location '/proc/x'", "QROUTE_STORE__LOCATION")
    assert "no index published yet" not in result.stderr, line


@pytest.mark.parametrize("command", [["index", TABLE], ["serve"]])
def test_a_store_location_that_is_a_file_is_named(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\n", encoding="utf-8")
    result = _qroute(tmp_path, *command, "--config", LEXICAL, QROUTE_STORE__LOCATION=str(blocker))
    _one_line_error(result, f"{blocker} is a file, not a directory", "store.location")


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    table = tmp_path / "t.parquet"
    table.write_bytes(bytes(range(256)) * 4)
    result = _qroute(tmp_path, "index", str(table), "--config", LEXICAL)
    _one_line_error(result, str(table), "Parquet")


def test_csv_fields_beyond_the_csv_modules_limit(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text(f"text,label\n{'가' * 200_000},금융\n비 와?,날씨\n", encoding="utf-8")
    result = _qroute(tmp_path, "index", str(table), "--config", LEXICAL, "--no-progress")
    _one_line_error(result, f"{table}:2", "table.max_text_chars")
    read = _qroute(
        tmp_path,
        *("index", str(table), "--config", LEXICAL, "--no-progress"),
        QROUTE_TABLE__MAX_TEXT_CHARS="300000",
    )
    assert read.returncode == 0, read.stderr
    assert "2 rows, 2 labels" in read.stdout


def test_a_binary_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "qroute.yaml"
    config.write_bytes(bytes(range(128, 256)) * 4)
    result = _qroute(tmp_path, "index", TABLE, "--config", str(config))
    _one_line_error(result, f"config file {config} is not UTF-8 text")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_metrics_port_in_use_is_named(tmp_path: Path, taken_port: int) -> None:
    result = _qroute(
        tmp_path, "serve", "--config", LEXICAL, QROUTE_SERVER__METRICS_PORT=str(taken_port)
    )
    _one_line_error(result, f"127.0.0.1:{taken_port}", "QROUTE_SERVER__METRICS_PORT")


@pytest.mark.parametrize("address", ["nonsense:xx", "127.0.0.1:99999", "203.0.113.7:50051"])
def test_a_bad_bind_address_is_named(tmp_path: Path, address: str) -> None:
    result = _qroute(tmp_path, "serve", "--config", LEXICAL, QROUTE_SERVER__BIND=address)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # grpc itself may log a line about an address it tried; ours is the last.
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"qroute: cannot bind the router to {address!r}")
    assert "QROUTE_SERVER__BIND" in line


def test_a_damaged_index_metadata_file_is_named_at_router_start(tmp_path: Path) -> None:
    indexed = _qroute(tmp_path, "index", TABLE, "--config", LEXICAL, "--no-progress")
    assert indexed.returncode == 0, indexed.stderr
    [meta] = (tmp_path / "store").glob("*/*_v1/qroute.json")
    meta.write_text("{damaged", encoding="utf-8")
    result = _qroute(tmp_path, "serve", "--config", LEXICAL)
    _one_line_error(result, f"{meta} is damaged", "qroute index --rollback")


EXAMPLE = str(ROOT / "examples" / "qroute.yaml")  # dense retrieval, zero_shot.method: nli


@pytest.mark.parametrize("model", ["nobody/no-such-nli", "/nonexistent/nli"])
def test_a_missing_nli_model_names_the_setting_that_turns_it_off(
    tmp_path: Path, model: str
) -> None:
    """Lexical mode loads no encoder; the NLI model is then the one missing, and the way
    out is the zero-shot setting, not lexical mode again."""
    result = _qroute(
        tmp_path,
        *("serve", "--config", EXAMPLE),
        QROUTE_RETRIEVAL__MODE="lexical",
        QROUTE_NLI__MODEL=model,
    )
    line = _one_line_error(result, model, "QROUTE_NLI__MODEL", "QROUTE_ZERO_SHOT__METHOD=off")
    assert "QROUTE_RETRIEVAL__MODE" not in line
    assert "=embedding" not in line  # not possible in lexical mode


def test_a_missing_encoder_under_embedding_zero_shot_names_both_settings(
    tmp_path: Path,
) -> None:
    result = _qroute(
        tmp_path,
        *("index", TABLE, "--config", EXAMPLE),
        QROUTE_ZERO_SHOT__METHOD="embedding",
        QROUTE_ENCODER__MODEL="nobody/no-such-encoder",
    )
    _one_line_error(
        result,
        "QROUTE_ENCODER__MODEL",
        "QROUTE_RETRIEVAL__MODE=lexical with QROUTE_ZERO_SHOT__METHOD=off",
    )
