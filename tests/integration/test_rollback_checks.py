"""``qroute index --rollback`` and ``--list``: what a rollback checks before it moves the
pointer (a target the routers would refuse, a damaged one, a live version that is gone),
a damaged version in the listing, and flags that do nothing together."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from qroute_indexer import list_versions, rollback, run_index

from qroute.cli import main
from qroute.config import Settings
from qroute.errors import IndexWriteError
from qroute.store.embedded import EmbeddedStore
from qroute.testing import BagOfWordsEncoder
from tests.integration.test_indexer_recovery import _table


def _lexical(make_settings: Callable[..., Settings], ngram_max: int = 3) -> Settings:
    return make_settings(
        retrieval={"mode": "lexical"},
        encoder={"model": "/nowhere"},
        lexical={"ngram_min": 1, "ngram_max": ngram_max},
        zero_shot={"method": "off"},
    )


async def _versions(settings: Settings, table: Path, count: int) -> list[str]:
    return [
        (await run_index(settings, table, progress=False, full=True)).version for _ in range(count)
    ]


def _root(settings: Settings) -> Path:
    return Path(settings.store.location) / settings.store.collection


async def _current(settings: Settings) -> str | None:
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    try:
        return await store.current_version()
    finally:
        await store.close()


async def test_a_target_built_with_other_ngrams_is_refused_up_front(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    table = _table(tmp_path / "t.csv")
    old = (await run_index(_lexical(make_settings), table, progress=False)).version
    settings = _lexical(make_settings, ngram_max=4)  # what the routers now run
    live = (await run_index(settings, table, progress=False)).version
    with pytest.raises(IndexWriteError) as info:
        await rollback(settings)
    message = str(info.value)
    assert old in message and live in message and "--replace-mode" in message
    assert "1-3" in message and "1-4" in message
    assert await _current(settings) == live  # nothing moved
    # Asked for explicitly (the routers are restarted with the old settings): it moves.
    assert await rollback(settings, replace_mode=True) == (live, old)


async def test_a_target_of_another_retrieval_mode_is_refused_up_front(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    table = _table(tmp_path / "t.csv")
    dense = make_settings()
    old = (await run_index(dense, table, encoder=BagOfWordsEncoder(), progress=False)).version
    lexical = _lexical(make_settings)
    live = (await run_index(lexical, table, progress=False, replace_mode=True)).version
    with pytest.raises(IndexWriteError, match=rf"{old} has no lexical vectors") as info:
        await rollback(lexical)
    assert "retrieval.mode" in str(info.value) and live in str(info.value)
    assert await _current(lexical) == live


async def test_a_damaged_target_is_refused_and_the_live_version_stays(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _lexical(make_settings)
    old, live = await _versions(settings, _table(tmp_path / "t.csv"), 2)
    (_root(settings) / old / "edge_config.json").write_text("garbage", encoding="utf-8")
    with pytest.raises(IndexWriteError, match=rf"cannot roll back to {old}.*stays {live}"):
        await rollback(settings)
    assert await _current(settings) == live


async def test_a_live_version_with_damaged_metadata_can_still_be_rolled_back(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # What the router's start error for a damaged qroute.json advises.
    settings = _lexical(make_settings)
    old, live = await _versions(settings, _table(tmp_path / "t.csv"), 2)
    (_root(settings) / live / "qroute.json").write_text("{damaged", encoding="utf-8")
    assert await rollback(settings) == (live, old)


async def test_a_published_version_whose_files_are_gone_can_be_rolled_back(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _lexical(make_settings)
    first, second, gone = await _versions(settings, _table(tmp_path / "t.csv"), 3)
    shutil.rmtree(_root(settings) / gone)
    rows = await list_versions(settings)
    # The listing shows where the pointer is, though nothing is there.
    assert [(r.name, r.current, r.points) for r in rows] == [
        (first, False, 18),
        (second, False, 18),
        (gone, True, None),
    ]
    assert await rollback(settings) == (gone, second)


async def test_the_listing_names_a_damaged_version_instead_of_failing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _lexical(make_settings)
    old, live = await _versions(settings, _table(tmp_path / "t.csv"), 2)
    (_root(settings) / old / "edge_config.json").write_text("garbage", encoding="utf-8")
    rows = await list_versions(settings)
    assert [(r.name, r.published, r.points) for r in rows] == [(old, True, None), (live, True, 18)]


# -- the command line ---------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "qroute.yaml"
    path.write_text(
        "retrieval:\n  mode: lexical\nzero_shot:\n  method: 'off'\n"
        f"store:\n  location: {tmp_path / 'store'}\n  collection: c\n",
        encoding="utf-8",
    )
    return path


def _published(config: Path) -> str:
    return (config.parent / "store" / "c" / "CURRENT").read_text(encoding="utf-8").strip()


@pytest.mark.parametrize(
    "flags",
    [
        ["TABLE", "--rollback"],
        ["--list", "--rollback"],
        ["TABLE", "--list"],
        ["--rollback", "--full"],
        ["--rollback", "--check"],
        ["--list", "--holdout", "TABLE"],
        ["--rollback", "--extra", "TABLE"],
    ],
)
def test_flags_that_do_nothing_together_are_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    table = str(_table(tmp_path / "t.csv"))
    for _ in range(2):
        assert main(["index", table, "--config", str(config), "--no-progress", "-q"]) == 0
    capsys.readouterr()
    argv = [table if flag == "TABLE" else flag for flag in flags]
    assert main(["index", *argv, "--config", str(config), "-q"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("qroute: ") and error.count("\n") == 1, error
    named = [flag for flag in flags if flag.startswith("--")]
    assert all(flag in error for flag in named), error
    assert _published(config) == "c_v2"  # nothing rolled back


def test_rollback_with_replace_mode_is_accepted(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = str(_table(tmp_path / "t.csv"))
    for _ in range(2):
        assert main(["index", table, "--config", str(config), "--no-progress", "-q"]) == 0
    assert main(["index", "--rollback", "--replace-mode", "--config", str(config), "-q"]) == 0
    assert _published(config) == "c_v1"
