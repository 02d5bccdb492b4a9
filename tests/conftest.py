"""Shared fixtures: tiny models built in this session, the example table, settings."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from qroute.config import Settings
from qroute.testing import TinyModels, build_tiny_models

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TABLE = ROOT / "examples" / "queries.csv"
TEMPLATE = "이 문장은 {label}에 관한 것입니다."
# Constructed fine-tuning tables: each label's queries name one of its topic words among
# filler words every label shares.
TOPICS = {
    "금융": ("주식", "환율", "금리"),
    "날씨": ("비", "기온", "미세먼지"),
    "영화": ("배우", "개봉", "예매"),
    "음악": ("노래", "가수", "앨범"),
    "교통": ("버스", "지하철", "도로"),
}
FILLERS = ("알려줘", "어때", "오늘", "내일", "지금", "궁금해", "확인해줘", "보여줘", "좀", "정보")


# The session's exit status, kept for pytest_unconfigure (see there).
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once pytest has reported, skipping the interpreter's
    finalisation. The suite leaves native threads of several libraries in this one
    process (gRPC's event engine, timer and lifeguard threads, a foreign thread Python
    registered as a dummy, torch's), and a fresh-clone `.ci/run` once ended with
    "620 passed" followed by a segmentation fault while the interpreter shut down: the
    status CI reads was 2 for a green run. The routers and CLIs the tests start as
    processes exit on their own path, and their exit codes are asserted."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:  # no session ran (--help, a usage error): exit as pytest would
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def example_rows() -> list[dict[str, str]]:
    with EXAMPLE_TABLE.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No QROUTE_* variable of the developer's shell leaks into a test."""
    import os

    for name in [n for n in os.environ if n.startswith("QROUTE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    rows = example_rows()
    texts = [r["text"] for r in rows]
    texts += [TEMPLATE.format(label=label) for label in sorted({r["label"] for r in rows})]
    return build_tiny_models(texts, tmp_path_factory.mktemp("models"))


@pytest.fixture
def make_settings(tmp_path: Path, tiny_models: TinyModels) -> Callable[..., Settings]:
    """Settings on the tiny models and a fresh embedded store; keyword sections override."""

    def make(**sections: dict[str, Any]) -> Settings:
        base: dict[str, dict[str, Any]] = {
            "encoder": {"model": str(tiny_models.encoder)},
            "nli": {"model": str(tiny_models.nli)},
            "zero_shot": {"template": TEMPLATE},
            # The tiny random encoder puts distinct texts below 0.99 of each other,
            # and a text exactly on itself.
            "router": {"k": 5, "similarity_threshold": 0.99},
            "store": {"location": str(tmp_path / "store"), "collection": "test"},
            "server": {
                "bind": "127.0.0.1:0",
                "index_poll_s": 0.2,
                "config_poll_s": 0.1,
                "metrics_port": 0,
            },
        }
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        return Settings(**base)

    return make


class Interrupted(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    """Stands in for a killed process: fails right after the checkpoint at ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            raise Interrupted(f"interrupted after step {state.global_step}")


@pytest.fixture
def lexical_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    """A working folder (the current one) with the example table indexed by the
    lexical example config (no model): what a CLI test runs its commands against."""
    import json

    from qroute.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QROUTE_CONFIG", raising=False)
    monkeypatch.setenv("QROUTE_STORE__LOCATION", str(tmp_path / "store"))
    table = str(ROOT / "examples" / "queries.csv")
    config = str(ROOT / "examples" / "qroute-lexical.yaml")
    assert main(["index", table, "--config", config, "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == "examples_lexical_v1" and report["rows"] > 0
    return tmp_path


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """A tiny model's step is microseconds of work: a second intra-op thread only adds
    synchronisation, and on a busy machine waiting for it dominates the run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
