"""The indexing job: idempotent and incremental runs, gates, retention, rollback, crashes."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from qroute_indexer import list_versions, rollback, run_index
from qroute_server.app import RouterApp

from qroute.config import Settings
from qroute.errors import IndexWriteError
from qroute.routing.classifier import Classifier
from qroute.store import Point
from qroute.store.embedded import EmbeddedStore
from qroute.table import row_id
from qroute.testing import BagOfWordsEncoder, TinyModels
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc
from tests.conftest import ROOT

ROWS = [
    (f"{topic} question number {i}", topic)
    for topic in ("finance", "movie", "weather")
    for i in range(6)
]


def _table(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(index={"keep_versions": 3, "write_batch": 4})


def _store(settings: Settings) -> EmbeddedStore:
    return EmbeddedStore(settings.store.location, settings.store.collection, drain_s=0.2)


async def _index(settings: Settings, table: Path, encoder: BagOfWordsEncoder, **kwargs: Any) -> Any:
    return await run_index(settings, table, encoder=encoder, progress=False, **kwargs)


def _encoded(encoder: BagOfWordsEncoder) -> list[str]:
    return [text for call in encoder.calls for text in call]


async def test_rerunning_the_same_table_changes_nothing(settings: Settings, tmp_path: Path) -> None:
    table = _table(tmp_path / "t.csv", ROWS)
    encoder = BagOfWordsEncoder()
    first = await _index(settings, table, encoder)
    encoder.calls.clear()
    second = await _index(settings, table, encoder)
    assert (first.mode, second.mode) == ("full", "incremental")
    assert second.embedded == 0 and second.reused == len(ROWS)
    assert encoder.calls == []  # nothing was embedded again (the gates reuse vectors too)
    store = _store(settings)
    ids = [row_id(t, label) for t, label in ROWS]
    for version in (first.version, second.version):
        assert await store.count(version) == len(ROWS)
        assert set(await store.vectors(version, ids)) == set(ids)
    await store.close()


async def test_incremental_run_embeds_only_new_and_changed_rows(
    settings: Settings, tmp_path: Path
) -> None:
    encoder = BagOfWordsEncoder()
    await _index(settings, _table(tmp_path / "a.csv", ROWS), encoder)
    changed = [
        *ROWS[1:],
        ("finance question edited", "finance"),
        ("brand new weather row", "weather"),
    ]
    changed[3] = ("movie question number 4 edited", "movie")  # an edit: new text, new id
    encoder.calls.clear()
    report = await _index(settings, _table(tmp_path / "b.csv", changed), encoder, holdout=None)

    assert report.mode == "incremental"
    assert report.embedded == 3 and report.reused == len(changed) - 3
    written = [text for call in encoder.calls for text in call]
    assert sorted(written) == sorted(
        ["finance question edited", "brand new weather row", "movie question number 4 edited"]
    )
    store = _store(settings)
    assert await store.count(report.version) == len(changed)
    gone = [row_id(*ROWS[0]), row_id(*ROWS[4])]
    assert await store.vectors(report.version, gone) == {}
    await store.close()


async def test_a_new_encoder_rebuilds_everything(settings: Settings, tmp_path: Path) -> None:
    table = _table(tmp_path / "t.csv", ROWS)
    await _index(settings, table, BagOfWordsEncoder(dimension=1024))
    report = await _index(settings, table, BagOfWordsEncoder(dimension=512))
    assert report.mode == "full" and report.embedded == len(ROWS)


async def test_router_refuses_an_index_built_with_another_encoder(
    settings: Settings, tmp_path: Path
) -> None:
    await _index(settings, _table(tmp_path / "t.csv", ROWS), BagOfWordsEncoder(dimension=512))
    app = RouterApp(settings)
    port = await app.start()
    await app.load(Classifier(settings, BagOfWordsEncoder(dimension=1024), None, _store(settings)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Classify(pb.ClassifyRequest(text="finance question"), timeout=10)
    finally:
        await app.stop(grace=0)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "bag-of-words|dim=512" in (info.value.details() or "")
    assert "bag-of-words|dim=1024" in (info.value.details() or "")


class LossyStore(EmbeddedStore):
    """A store that damages what it writes, to make one gate fail."""

    def __init__(self, settings: Settings, damage: Callable[[list[Point]], list[Point]]) -> None:
        super().__init__(settings.store.location, settings.store.collection, drain_s=0.2)
        self._damage = damage

    async def upsert(self, version: str, points: Sequence[Point]) -> None:
        await super().upsert(version, self._damage(list(points)))


def _drop_one(points: list[Point]) -> list[Point]:
    return points[:-1]


def _drop_movies(points: list[Point]) -> list[Point]:
    return [p for p in points if p.payload["label"] != "movie"]


def _scramble(points: list[Point]) -> list[Point]:
    rng = np.random.default_rng(0)
    return [Point(p.id, rng.standard_normal(len(p.vector)).tolist(), p.payload) for p in points]


@pytest.mark.parametrize(
    ("damage", "gate"),
    [
        (_drop_one, "count:"),
        (_drop_movies, "labels: no points for ['movie']"),
        (_scramble, "canaries:"),
    ],
)
async def test_a_failed_gate_leaves_the_published_version_alone(
    settings: Settings, tmp_path: Path, damage: Callable[[list[Point]], list[Point]], gate: str
) -> None:
    table = _table(tmp_path / "t.csv", ROWS)
    good = await _index(settings, table, BagOfWordsEncoder())
    with pytest.raises(IndexWriteError, match="gate failed") as info:
        await _index(
            settings, table, BagOfWordsEncoder(), full=True, store=LossyStore(settings, damage)
        )
    assert gate in str(info.value)
    assert f"the published version stays {good.version}" in str(info.value)
    store = _store(settings)
    assert await store.current_version() == good.version
    assert await store.versions() == [good.version]  # the failed draft was dropped
    await store.close()


async def test_holdout_accuracy_gate(settings: Settings, tmp_path: Path) -> None:
    table = _table(tmp_path / "t.csv", ROWS)
    good = await _index(settings, table, BagOfWordsEncoder())
    # Same texts with the finance and movie labels swapped: canaries still find their
    # (wrong) labels, but accuracy on the held-out file collapses.
    swapped = {"finance": "movie", "movie": "finance", "weather": "weather"}
    wrong = _table(tmp_path / "w.csv", [(t, swapped[label]) for t, label in ROWS])
    with pytest.raises(IndexWriteError, match=r"holdout: accuracy 0\.3333") as info:
        await _index(settings, wrong, BagOfWordsEncoder(), holdout=table)
    assert "live version's 1.0000" in str(info.value)
    store = _store(settings)
    assert await store.current_version() == good.version
    await store.close()
    # Without the held-out file the same table is accepted.
    assert (await _index(settings, wrong, BagOfWordsEncoder())).previous == good.version


async def test_retention_and_rollback(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(
        update={"index": settings.index.model_copy(update={"keep_versions": 2})}
    )
    versions = []
    for n in range(3):
        report = await _index(
            settings, _table(tmp_path / f"{n}.csv", ROWS[: 10 + n]), BagOfWordsEncoder()
        )
        versions.append(report.version)
    store = _store(settings)
    assert await store.versions() == versions[1:]  # keep_versions: the live one and one more
    assert await rollback(settings, store) == (versions[2], versions[1])
    assert await store.current_version() == versions[1]
    assert await store.count(versions[1]) == 11
    with pytest.raises(IndexWriteError, match="nothing to roll back to"):
        await rollback(settings, store)
    await store.close()


async def test_keep_versions_published_versions_are_kept(
    settings: Settings, tmp_path: Path
) -> None:
    versions = []
    for n in range(4):
        table = _table(tmp_path / f"{n}.csv", ROWS[: 10 + n])
        versions.append((await _index(settings, table, BagOfWordsEncoder())).version)
    store = _store(settings)
    assert await store.versions() == versions[1:]  # keep_versions: 3
    await store.close()


async def test_a_failed_run_keeps_the_rollback_target(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(
        update={"index": settings.index.model_copy(update={"keep_versions": 2})}
    )
    table = _table(tmp_path / "t.csv", ROWS)
    first = await _index(settings, table, BagOfWordsEncoder())
    second = await _index(settings, table, BagOfWordsEncoder(), full=True)
    with pytest.raises(IndexWriteError, match="gate failed"):
        lossy = LossyStore(settings, _drop_one)
        await _index(settings, table, BagOfWordsEncoder(), full=True, store=lossy)
    store = _store(settings)
    assert await store.versions() == [first.version, second.version]
    assert await rollback(settings, store) == (second.version, first.version)
    await store.close()


async def test_a_version_a_reader_held_is_removed_by_a_later_retention(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"index": settings.index.model_copy(update={"keep_versions": 1})}
    )
    table = _table(tmp_path / "t.csv", ROWS)
    first = await _index(settings, table, BagOfWordsEncoder())
    reader = _store(settings)
    await reader.open(first.version)
    second = await _index(settings, table, BagOfWordsEncoder(), full=True, store=_store(settings))
    store = _store(settings)
    assert await store.versions() == [first.version, second.version]  # held: left alone
    await reader.close()
    third = await _index(settings, table, BagOfWordsEncoder(), full=True, store=_store(settings))
    assert third.dropped == (first.version, second.version)
    assert await store.versions() == [third.version]
    await store.close()


async def test_rollback_takes_the_indexers_lock(settings: Settings, tmp_path: Path) -> None:
    table = _table(tmp_path / "t.csv", ROWS)
    first = await _index(settings, table, BagOfWordsEncoder())
    second = await _index(settings, table, BagOfWordsEncoder(), full=True)
    indexer = _store(settings)
    async with indexer.exclusive():
        with pytest.raises(IndexWriteError, match=r"another indexer is writing .*retry when"):
            await rollback(settings, _store(settings))
        assert await indexer.current_version() == second.version
    assert await rollback(settings, indexer) == (second.version, first.version)
    await indexer.close()


async def test_a_run_in_another_mode_does_not_replace_the_index(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    table = _table(tmp_path / "t.csv", ROWS)
    dense = await _index(make_settings(), table, BagOfWordsEncoder())
    lexical = make_settings(retrieval={"mode": "lexical"}, encoder={"model": "/nowhere"})
    with pytest.raises(IndexWriteError) as info:
        await run_index(lexical, table, progress=False, full=True)
    message = str(info.value)
    assert f"{dense.version} of collection 'test' is a dense index" in message
    assert "with a lexical one" in message and "--replace-mode" in message
    store = _store(lexical)
    assert await store.versions() == [dense.version]
    assert await store.current_version() == dense.version
    report = await run_index(lexical, table, progress=False, replace_mode=True, store=store)
    assert (await store.metadata(report.version))["retrieval"] == "lexical"
    await store.close()


async def test_one_indexer_at_a_time(settings: Settings, tmp_path: Path) -> None:
    holder = _store(settings)
    async with holder.exclusive():
        with pytest.raises(IndexWriteError, match="another indexer"):
            await _index(settings, _table(tmp_path / "t.csv", ROWS), BagOfWordsEncoder())
    await holder.close()


def test_check_prints_the_report_and_writes_nothing(
    tmp_path: Path, tiny_models: TinyModels
) -> None:
    table = tmp_path / "t.csv"
    table.write_bytes("text,label\n코스닥 지수,금융\n,금융\n코스닥 지수,금융\n".encode("cp949"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QROUTE_")}
    env["QROUTE_STORE__LOCATION"] = str(tmp_path / "store")
    result = subprocess.run(
        [sys.executable, "-m", "qroute", "index", str(table), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"{table}:3: text: empty [empty_text: error]" in result.stdout
    assert f"{table}:4: same text and label as row 2 [duplicate: skip]" in result.stdout
    assert "totals: duplicate 1 (skip), empty_text 1 (error)" in result.stdout
    assert "(cp949)" in result.stdout
    assert not (tmp_path / "store").exists()


def test_kill_9_mid_write_then_rerun(tmp_path: Path, tiny_models: TinyModels) -> None:
    """The alias stays on a complete version through kill -9; a rerun finishes the work,
    with no duplicates and no half-written version left behind."""
    with (ROOT / "examples" / "queries.csv").open(encoding="utf-8") as handle:
        base = list(csv.DictReader(handle))
    small = _table(tmp_path / "small.csv", [(r["text"], r["label"]) for r in base])
    big_rows = [(f"{r['text']} {i}", r["label"]) for i in range(120) for r in base]
    big = _table(tmp_path / "big.csv", big_rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QROUTE_")}
    env.update(
        QROUTE_STORE__LOCATION=str(tmp_path / "store"),
        QROUTE_STORE__COLLECTION="crash",
        QROUTE_ENCODER__MODEL=str(tiny_models.encoder),
        QROUTE_INDEX__WRITE_BATCH="256",
    )
    command = [sys.executable, "-m", "qroute", "index", "--no-progress"]
    subprocess.run([*command, str(small)], env=env, check=True, capture_output=True, timeout=300)
    root = tmp_path / "store" / "crash"

    writer = subprocess.Popen([*command, str(big), "--full"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (root / "crash_v2" / "segments").exists():
        assert writer.poll() is None, "the indexer finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # well into the write
    assert writer.poll() is None, "the indexer finished before it could be killed"
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    assert (root / "CURRENT").read_text().strip() == "crash_v1"
    assert (root / "crash_v2").exists()  # the draft the killed run left

    rerun = subprocess.run(
        [*command, str(big)], env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "removed unpublished draft crash_v2" in rerun.stderr
    # A new number: "crash_v2" never names two different indexes (logs, metrics, replies).
    assert f"published crash_v3: {len(big_rows)} rows" in rerun.stdout
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["crash_v1", "crash_v3"]
    listing = subprocess.run(
        [*command[:4], "--list"], env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert re.search(rf"crash_v3 +published\* +{len(big_rows)} ", listing), listing
    assert re.search(r"crash_v1 +rollback +313 ", listing), listing


async def test_hybrid_reindex_reuses_dense_vectors_and_recounts_the_lexicon(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(retrieval={"mode": "hybrid"}, index={"write_batch": 4})
    encoder = BagOfWordsEncoder()
    first = await _index(settings, _table(tmp_path / "a.csv", ROWS), encoder)
    encoder.calls.clear()
    grown = [*ROWS, ("weather forecast for busan", "weather")]
    second = await _index(settings, _table(tmp_path / "b.csv", grown), encoder)
    assert second.mode == "incremental" and second.embedded == 1
    assert _encoded(encoder) == ["weather forecast for busan"]

    store = _store(settings)
    old = await store.metadata(first.version)
    new = await store.metadata(second.version)
    assert old["lexicon"]["points"] == len(ROWS) and new["lexicon"]["points"] == len(grown)
    assert new["retrieval"] == "hybrid" and new["lexical"] == old["lexical"]
    await store.close()


async def test_lexical_index_holds_no_dense_vectors_and_needs_no_encoder(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(retrieval={"mode": "lexical"}, encoder={"model": "/nowhere"})
    report = await run_index(settings, _table(tmp_path / "t.csv", ROWS), progress=False)
    assert report.embedded == 0 and report.rows == len(ROWS)
    store = _store(settings)
    metadata = await store.metadata(report.version)
    assert "encoder" not in metadata and metadata["retrieval"] == "lexical"
    assert await store.vectors(report.version, [row_id(*ROWS[0])]) == {row_id(*ROWS[0]): []}
    await store.close()


async def test_a_rollback_after_a_rollback_and_a_new_run_skips_the_withdrawn_version(
    settings: Settings, tmp_path: Path
) -> None:
    # good is published, bad replaces it and is rolled back, then a new run publishes
    # newer: a rollback from newer must restore good (what newer replaced), not bad.
    table = _table(tmp_path / "t.csv", ROWS)
    good = await _index(settings, table, BagOfWordsEncoder())
    bad = await _index(settings, table, BagOfWordsEncoder(), full=True)
    store = _store(settings)
    assert await rollback(settings, store) == (bad.version, good.version)
    await store.close()
    newer = await _index(settings, table, BagOfWordsEncoder(), full=True)
    assert newer.previous == good.version
    # --list names the version a rollback would publish.
    listed = {row.name: row.rollback_target for row in await list_versions(settings)}
    assert listed == {good.version: True, bad.version: False, newer.version: False}
    store = _store(settings)
    assert await rollback(settings, store) == (newer.version, good.version)
    await store.close()


async def test_retention_keeps_the_rollback_target_not_the_withdrawn_version(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"index": settings.index.model_copy(update={"keep_versions": 2})}
    )
    table = _table(tmp_path / "t.csv", ROWS)
    good = await _index(settings, table, BagOfWordsEncoder())
    bad = await _index(settings, table, BagOfWordsEncoder(), full=True)
    store = _store(settings)
    await rollback(settings, store)
    await store.close()
    newer = await _index(settings, table, BagOfWordsEncoder(), full=True)
    # The version rolled away from goes; the one a rollback would restore stays.
    assert newer.dropped == (bad.version,)
    store = _store(settings)
    assert await store.versions() == [good.version, newer.version]
    await store.close()
