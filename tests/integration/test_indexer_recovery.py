"""The index job when something fails under it: the encoder mid-run, a kill during
retention, its own reader of the live version in the way of retention."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from qroute_indexer import list_versions, rollback, run_index

from qroute.config import Settings
from qroute.errors import IndexWriteError
from qroute.store.embedded import EmbeddedStore
from qroute.testing import BagOfWordsEncoder
from tests.integration.test_indexer import _table as write_table

ROWS = [
    (f"{topic} question number {i}", topic)
    for topic in ("finance", "movie", "weather")
    for i in range(6)
]


def _table(path: Path) -> Path:
    return write_table(path, ROWS)


def _settings(tmp_path: Path, keep_versions: int = 3) -> Settings:
    # The encoder is always passed in: no model is loaded.
    return Settings(
        encoder={"model": str(tmp_path / "unused")},
        store={"location": str(tmp_path / "store"), "collection": "test"},
        index={"write_batch": 4, "keep_versions": keep_versions},
    )


class FailingEncoder(BagOfWordsEncoder):
    """Fails on its third batch, as a GPU out of memory would."""

    def encode(self, texts: Sequence[str]) -> Any:
        if len(self.calls) >= 2:
            raise RuntimeError("CUDA out of memory")
        return super().encode(texts)


async def test_an_encoder_failure_mid_write_fails_the_run_instead_of_hanging(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    run = run_index(settings, _table(tmp_path / "t.csv"), encoder=FailingEncoder(), progress=False)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        await asyncio.wait_for(run, 30)
    store = EmbeddedStore(settings.store.location, "test")
    assert await store.versions() == []  # the new version was dropped
    assert await store.current_version() is None
    await store.close()


async def test_keep_versions_1_removes_the_version_an_incremental_run_read(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, keep_versions=1)
    table = _table(tmp_path / "t.csv")
    await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False)
    started = time.monotonic()
    second = await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False)
    # The run read the live version's vectors itself; that reader must not hold up
    # (30 s) and then defeat the removal of that version.
    assert second.mode == "incremental"
    assert time.monotonic() - started < 10
    store = EmbeddedStore(settings.store.location, "test")
    assert await store.versions() == [second.version]
    await store.close()


class _Killed(BaseException):
    """Stands in for kill -9: nothing after it runs."""


async def test_a_kill_during_retention_leaves_no_version_to_roll_back_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, keep_versions=2)
    table = _table(tmp_path / "t.csv")
    first = await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False)
    second = await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False)

    real_unlink, removed = os.unlink, []

    def unlink(*args: Any, **kwargs: Any) -> None:
        # Dies three files into removing the oldest version.
        if len(removed) == 3:
            raise _Killed
        removed.append(args[0])
        real_unlink(*args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(_Killed):
        await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False, full=True)
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert (tmp_path / "store" / "test" / first.version).is_dir()  # half removed

    # The half-removed version is no rollback target, and listing does not fail on it.
    published = [r.name for r in await list_versions(settings) if r.published]
    assert first.version not in published and second.version in published
    _, target = await rollback(settings)
    assert target == second.version
    with pytest.raises(IndexWriteError, match="nothing to roll back to"):
        await rollback(settings)
    store = EmbeddedStore(settings.store.location, "test")
    assert await store.count(await store.current_version() or "") == len(ROWS)
    await store.close()
    # The next run removes what was left of it.
    await run_index(settings, table, encoder=BagOfWordsEncoder(), progress=False)
    assert not (tmp_path / "store" / "test" / first.version).exists()
