"""Gates that failed on valid input: canaries tied with another label's identical row,
and a held-out file read through the indexed table's label-count policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qroute_indexer import run_index

from qroute.config import Settings
from qroute.errors import IndexWriteError, TableError
from qroute.store.embedded import EmbeddedStore
from tests.integration.test_indexer import _table
from tests.integration.test_indexer_recovery import ROWS


def _settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    base: dict[str, dict[str, Any]] = {
        "retrieval": {"mode": "lexical"},
        "encoder": {"model": "/nowhere"},
        "zero_shot": {"method": "off"},
        "store": {"location": str(tmp_path / "store"), "collection": "gates"},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return Settings(**base)


class CountingStore(EmbeddedStore):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.store.location, settings.store.collection, drain_s=0.2)
        self.created = 0

    async def create_version(self, *args: Any, **kwargs: Any) -> str:
        self.created += 1
        return await super().create_version(*args, **kwargs)


@pytest.mark.parametrize(
    ("rows", "table"),
    [
        # Differs only in case: valid at the default policies, the same n-grams.
        ([("Finance question number 0", "movie"), *ROWS], {}),
        # The same text under two labels, kept on purpose.
        ([("finance question number 0", "movie"), *ROWS], {"on_conflicting_labels": "warn"}),
    ],
)
async def test_a_canary_tied_with_another_labels_identical_row_passes(
    tmp_path: Path, rows: list[tuple[str, str]], table: dict[str, Any]
) -> None:
    settings = _settings(tmp_path, table=table, index={"head": True})
    report = await run_index(settings, _table(tmp_path / "t.csv", rows), progress=False)
    assert report.rows == len(rows)


async def test_a_small_holdout_is_not_cut_by_the_tables_min_examples(tmp_path: Path) -> None:
    settings = _settings(tmp_path, table={"min_examples": 3, "on_rare_label": "skip"})
    table = _table(tmp_path / "t.csv", ROWS)
    first = await run_index(settings, table, progress=False)
    held = _table(tmp_path / "h.csv", ROWS[::3])  # two rows per label
    report = await run_index(settings, table, progress=False, full=True, holdout=held)
    assert report.previous == first.version


async def test_a_bad_holdout_fails_before_anything_is_written(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = CountingStore(settings)
    with pytest.raises(TableError, match=r"--holdout.*nope\.csv") as info:
        await run_index(
            settings,
            _table(tmp_path / "t.csv", ROWS),
            progress=False,
            holdout=tmp_path / "nope.csv",
            store=store,
        )
    assert store.created == 0, info.value
    assert await store.current_version() is None
    await store.close()


async def test_the_holdout_gate_scores_the_routers_vote_not_the_nearest_row(
    make_settings: Any, tmp_path: Path
) -> None:
    # The held-out query's nearest row is label a's, but label b's three close rows win
    # the router's vote (router.label_score max_mean): the live version answers it
    # right. The new version weakens b's rows: its answer turns to a. The nearest row
    # is a's in both, so a gate on the nearest row saw no change.
    from qroute.testing import BagOfWordsEncoder

    settings = make_settings(index={"keep_versions": 3})
    far = [("w1 y1 y2 y3", "a"), ("w1 y4 y5 y6", "a")]
    live_rows = [("w1 w2 w3 w4 x", "a"), *far] + [(f"w1 w2 w3 z{i}", "b") for i in range(3)]
    new_rows = [("w1 w2 w3 w4 x", "a"), *far] + [(f"w1 w2 z{i} v{i}", "b") for i in range(3)]
    held = _table(tmp_path / "h.csv", [("w1 w2 w3 w4", "b")])
    live = await run_index(
        settings, _table(tmp_path / "l.csv", live_rows), encoder=BagOfWordsEncoder(), progress=False
    )
    with pytest.raises(
        IndexWriteError, match=r"holdout: accuracy 0\.0000 .* live version's 1\.0000"
    ):
        await run_index(
            settings,
            _table(tmp_path / "n.csv", new_rows),
            encoder=BagOfWordsEncoder(),
            progress=False,
            full=True,
            holdout=held,
        )
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    assert await store.current_version() == live.version
    await store.close()
