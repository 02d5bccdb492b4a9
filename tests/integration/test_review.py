"""Learning from traffic over a real router (lexical mode, examples/queries.csv, no
model): the review queue, SubmitFeedback, review -> export -> re-index, and the shadow
candidate under concurrent load."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from qroute_client import AsyncClient, InvalidArgument
from qroute_indexer import run_index
from qroute_server.app import RouterApp
from ruamel.yaml import YAML

from qroute.cli import main
from qroute.config import Settings, load_settings
from qroute.routing.review_store import ReviewStore
from qroute.types import Query
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "examples" / "queries.csv"
EVAL = ROOT / "examples" / "queries_eval.csv"
NONSENSE = "프랙탈 양자 얽힘 큐비트 보정"


def write_config(path: Path, tmp_path: Path, **sections: dict[str, Any]) -> Path:
    data: dict[str, dict[str, Any]] = {
        "retrieval": {"mode": "lexical"},
        "router": {"k": 10, "similarity_threshold": 0.3},
        "store": {"location": str(tmp_path / "store"), "collection": "test"},
        "server": {"bind": "127.0.0.1:0", "metrics_port": 0, "index_poll_s": 0.2},
        "review": {"enabled": True, "path": str(tmp_path / "review.sqlite")},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    YAML(typ="safe", pure=True).dump(data, path)
    return path


class Router:
    def __init__(self, app: RouterApp, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.stub = router_pb2_grpc.RouterServiceStub(channel)

    async def classify(self, text: str) -> pb.ClassifyResponse:
        return await self.stub.Classify(pb.ClassifyRequest(text=text), timeout=30)

    async def feedback(self, **fields: Any) -> pb.SubmitFeedbackResponse:
        return await self.stub.SubmitFeedback(pb.SubmitFeedbackRequest(**fields), timeout=30)

    async def drain(self) -> None:
        assert self.app.learning is not None
        await self.app.learning.drain()


Serve = Callable[..., Awaitable[Router]]


async def start_router(config: Path) -> tuple[RouterApp, grpc.aio.Channel]:
    app = RouterApp(load_settings(config))
    port = await app.start()
    await app.load()
    return app, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    running: list[tuple[RouterApp, grpc.aio.Channel]] = []

    async def start(**sections: dict[str, Any]) -> Router:
        config = write_config(tmp_path / "qroute.yaml", tmp_path, **sections)
        await run_index(load_settings(config), TABLE, progress=False)
        app, channel = await start_router(config)
        running.append((app, channel))
        return Router(app, channel)

    yield start
    for app, channel in running:
        await channel.close()
        await app.stop(grace=0)


def store_of(router: Router) -> ReviewStore:
    settings: Settings = router.app.settings
    return ReviewStore(settings.review.path)


async def test_no_match_answers_are_recorded_and_confident_ones_not(serve: Serve) -> None:
    router = await serve(review={"confidence_below": 0.5})
    none = await router.classify(NONSENSE)
    sure = await router.classify("코스닥 지수 알려줘")
    assert none.path == pb.DECISION_PATH_NO_MATCH and none.request_id
    assert sure.path == pb.DECISION_PATH_KNN and sure.confidence >= 0.5
    await router.drain()
    rows = store_of(router).rows()
    assert [r.request_id for r in rows] == [none.request_id]
    [row] = rows
    assert row.reasons == ("NO_MATCH",) and row.text == NONSENSE
    assert (row.explanation, row.config_version, row.index_version) == (
        none.reason,
        none.config_version,
        none.index_version,
    )
    assert sure.request_id and sure.request_id != none.request_id


async def test_texts_may_be_kept_as_hashes_only(serve: Serve) -> None:
    router = await serve(review={"store_texts": "hash"})
    await router.classify(NONSENSE)
    await router.drain()
    [row] = store_of(router).rows()
    assert row.text is None and row.text_hash and len(row.text_hash) == 64


@pytest.mark.parametrize("fault", ["slow", "failing"])
async def test_classify_never_waits_for_the_review_store(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    def add(self: ReviewStore, *args: object) -> None:
        time.sleep(1.0)
        if fault == "failing":
            raise OSError("disk full")

    router = await serve(review={"max_queue": 4})
    monkeypatch.setattr(ReviewStore, "add", add)
    await router.classify(NONSENSE)  # the writer is now inside a 1 s write
    latencies = []
    for i in range(20):
        started = time.perf_counter()
        response = await router.classify(f"{NONSENSE} {i}")
        latencies.append(time.perf_counter() - started)
        assert response.path == pb.DECISION_PATH_NO_MATCH
    assert max(latencies) < 0.5, latencies
    assert router.app.learning is not None and router.app.learning.recorder is not None
    # A few fit in the queue behind the write; the rest are dropped and counted.
    assert router.app.learning.recorder.counts["dropped"] >= 5


async def test_feedback_is_validated_like_classify(serve: Serve) -> None:
    router = await serve()
    cases = [
        ({"text": "환율 알려줘", "correct_label": "요리"}, "correct_label", "요리"),
        ({"correct_label": "금융"}, "text", "request_id"),
        ({"text": "환율 알려줘"}, "correct_label", "none_of_these"),
        ({"request_id": "nope", "correct_label": "금융"}, "request_id", "nope"),
        ({"text": " \u200b ", "correct_label": "금융"}, "text", "empty"),
    ]
    for fields, field, said in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router.feedback(**fields)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert said in (caught.value.details() or ""), (fields, caught.value.details())
        assert field in (caught.value.details() or "") or field == "text", fields


async def test_feedback_by_request_id_is_stored_with_the_answer(serve: Serve) -> None:
    router = await serve()
    answer = await router.classify("코스닥 지수 알려줘")
    await router.feedback(request_id=answer.request_id, correct_label="뉴스", source="qa")
    await router.feedback(text=NONSENSE, none_of_these=True)
    await router.drain()
    rows = store_of(router).rows(reason="FEEDBACK")
    by_text = {r.text: r for r in rows}
    row = by_text["코스닥 지수 알려줘"]
    assert (row.kind, row.feedback_label, row.label, row.source) == (
        "feedback",
        "뉴스",
        "금융",
        "qa",
    )
    assert row.request_id == answer.request_id
    assert by_text[NONSENSE].feedback_label == ""


async def test_feedback_names_a_recorded_answer_the_router_no_longer_remembers(
    serve: Serve,
) -> None:
    router = await serve(review={"remember_requests": 1})
    old = await router.classify(NONSENSE)
    await router.classify("코스닥 지수 알려줘")  # pushes `old` out of memory
    await router.drain()
    await router.feedback(request_id=old.request_id, correct_label="뉴스")
    await router.drain()
    [row] = store_of(router).rows(reason="FEEDBACK")
    assert (row.text, row.feedback_label, row.path) == (NONSENSE, "뉴스", "NO_MATCH")


async def test_every_text_of_a_batch_gets_its_own_request_id(serve: Serve) -> None:
    router = await serve()
    request = pb.ClassifyBatchRequest(
        requests=[pb.ClassifyRequest(text=t) for t in (NONSENSE, "환율 알려줘", NONSENSE)]
    )
    response = await router.stub.ClassifyBatch(request, timeout=30)
    ids = [r.request_id for r in response.responses]
    assert len(set(ids)) == 3 and all(ids)


async def test_a_repeated_query_gets_a_fresh_request_id_each_time(serve: Serve) -> None:
    # A request id names one response: an identical query (which a result cache could
    # answer from the same computed answer) is a new response with a new id.
    router = await serve()
    first, second = [await router.classify(NONSENSE) for _ in range(2)]
    assert first.request_id and second.request_id and first.request_id != second.request_id
    assert (first.label, first.path) == (second.label, second.path)
    await router.drain()
    ids = [r.request_id for r in store_of(router).rows()]
    assert ids == [second.request_id, first.request_id]


async def test_the_python_client_submits_feedback_by_request_id(serve: Serve) -> None:
    router = await serve()
    async with AsyncClient(f"127.0.0.1:{router.app.port}", max_attempts=1) as client:
        answer = await client.classify("코스닥 지수 알려줘")
        assert answer.request_id
        await client.submit_feedback("뉴스", request_id=answer.request_id, source="qa")
        await client.submit_feedback(None, text=NONSENSE)
        with pytest.raises(InvalidArgument):
            await client.submit_feedback("요리", text="환율 알려줘")
    await router.drain()
    rows = {r.text: r for r in store_of(router).rows(reason="FEEDBACK")}
    assert (rows["코스닥 지수 알려줘"].feedback_label, rows["코스닥 지수 알려줘"].source) == (
        "뉴스",
        "qa",
    )
    assert rows[NONSENSE].feedback_label == ""


async def test_feedback_needs_review_enabled(serve: Serve) -> None:
    router = await serve(review={"enabled": False})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router.feedback(text="환율 알려줘", correct_label="금융")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "review.enabled" in (caught.value.details() or "")


def test_accept_export_reindex_answers_the_text_by_knn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "qroute.yaml", tmp_path)

    async def ask(text: str) -> pb.ClassifyResponse:
        app, channel = await start_router(config)
        try:
            return await router_pb2_grpc.RouterServiceStub(channel).Classify(
                pb.ClassifyRequest(text=text), timeout=30
            )
        finally:
            assert app.learning is not None
            await app.learning.drain()
            await channel.close()
            await app.stop(grace=0)

    asyncio.run(run_index(load_settings(config), TABLE, progress=False))
    before = asyncio.run(ask(NONSENSE))
    assert before.path == pb.DECISION_PATH_NO_MATCH
    capsys.readouterr()
    assert main(["review", "list", "--json", "--config", str(config)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["request_id"] == before.request_id
    assert (
        main(["review", "accept", str(row["id"]), "--label", "뉴스", "--config", str(config)]) == 0
    )
    learned = tmp_path / "learned.csv"
    argv = ["review", "export", "--out", str(learned), "--json", "--config", str(config)]
    capsys.readouterr()
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1
    with learned.open(encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == [{"text": NONSENSE, "label": "뉴스"}]
    argv = ["index", str(TABLE), "--extra", str(learned), "--no-progress", "--config", str(config)]
    assert main(argv) == 0
    after = asyncio.run(ask(NONSENSE))
    assert (after.path, after.label) == (pb.DECISION_PATH_KNN, "뉴스")


def test_an_extra_row_that_contradicts_the_table_is_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "qroute.yaml", tmp_path)
    learned = tmp_path / "learned.csv"
    learned.write_text("text,label\n코스닥 지수 알려줘,뉴스\n", encoding="utf-8")
    argv = ["index", str(TABLE), "--extra", str(learned), "--no-progress", "--config", str(config)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{learned}:2" in err and "conflicting_labels" in err and f"{TABLE}:2" in err


async def test_shadow_counts_agreement_while_live_answers_stay_live(
    serve: Serve, tmp_path: Path
) -> None:
    candidate = write_config(
        tmp_path / "candidate.yaml", tmp_path, router={"k": 10, "similarity_threshold": 0.6}
    )
    router = await serve(shadow={"config": str(candidate), "max_queue": 1000})
    with EVAL.open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:50]
    assert router.app.classifier is not None
    expected = await router.app.classifier.classify([Query(t) for t in texts])
    answers = await asyncio.gather(*(router.classify(t) for t in texts))
    live_version = router.app.settings.version
    assert [a.label for a in answers] == [p.label or "" for p in expected]
    assert {a.config_version for a in answers} == {live_version}
    await router.drain()
    learning = router.app.learning
    assert learning is not None and learning.shadow is not None
    counts = learning.shadow.counts
    assert counts["agree"] + counts["disagree"] == 50 and counts["error"] == 0
    assert counts["disagree"] > 0 and counts["agree"] > 0
    metric = router.app.metrics.registry.get_sample_value(
        "qroute_shadow_total", {"outcome": "disagree"}
    )
    assert metric == counts["disagree"]
    disagreements = store_of(router).rows(reason="SHADOW_DISAGREE")
    assert len(disagreements) == counts["disagree"]
    for row in disagreements:
        assert row.shadow_label != row.label and row.config_version == live_version
        assert row.shadow_config_version not in (None, live_version)
    tally = store_of(router).tally()
    assert sum(sum(c.values()) for c in tally.values()) == 50


def test_review_commands_and_shadow_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = write_config(
        tmp_path / "candidate.yaml", tmp_path, router={"k": 10, "similarity_threshold": 0.6}
    )
    config = write_config(
        tmp_path / "qroute.yaml", tmp_path, shadow={"config": str(candidate), "min_agreement": 0.0}
    )
    with EVAL.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:30]

    async def traffic() -> None:
        app, channel = await start_router(config)
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            for row in rows:
                await stub.Classify(pb.ClassifyRequest(text=row["text"]), timeout=30)
            assert app.learning is not None
            await app.learning.drain()
        finally:
            await channel.close()
            await app.stop(grace=0)

    def run(*argv: str) -> Any:
        capsys.readouterr()
        assert main([*argv, "--json", "--config", str(config)]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    asyncio.run(run_index(load_settings(config), TABLE, progress=False))
    asyncio.run(traffic())
    listed = run("review", "list", "--reason", "SHADOW_DISAGREE")
    assert listed and all("SHADOW_DISAGREE" in r["reasons"] for r in listed)
    truth = {row["text"]: row["label"] for row in rows}
    first, second, third, *rest = listed
    assert run("review", "show", str(first["id"]))["shadow_label"] == first["shadow_label"]
    assert run("review", "reject", str(first["id"]))["status"] == "rejected"
    assert run("review", "relabel", str(second["id"]), "--label", "뉴스")["label"] == "뉴스"
    for row in [third, *rest]:
        run("review", "accept", str(row["id"]), "--label", truth[row["text"]])
    assert [r["id"] for r in run("review", "list", "--status", "rejected")] == [first["id"]]
    assert len(run("review", "list", "--status", "accepted")) == len(listed) - 1
    report = run("shadow", "report")
    assert report["compared"] == len(rows)
    agreed = sum(c["n"] for c in report["confusion"] if c["live"] == c["candidate"])
    assert report["agreement"] == pytest.approx(agreed / len(rows))
    assert report["reviewed"] == len(listed) - 1
    assert 0.0 <= report["live_accuracy"] <= 1.0 and 0.0 <= report["candidate_accuracy"] <= 1.0
    better = report["candidate_accuracy"] >= report["live_accuracy"]
    assert report["promote"] is better


def test_shadow_of_an_older_index_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    learned = tmp_path / "learned.csv"
    learned.write_text(f"text,label\n{NONSENSE},뉴스\n", encoding="utf-8")
    plain = write_config(tmp_path / "plain.yaml", tmp_path)
    first = asyncio.run(run_index(load_settings(plain), TABLE, progress=False))
    asyncio.run(run_index(load_settings(plain), TABLE, progress=False, extra=[learned]))
    config = write_config(
        tmp_path / "qroute.yaml",
        tmp_path,
        shadow={"index_version": first.version, "min_agreement": 0.0},
    )

    async def traffic() -> list[pb.ClassifyResponse]:
        app, channel = await start_router(config)
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            answers = [
                await stub.Classify(pb.ClassifyRequest(text=t), timeout=30)
                for t in (NONSENSE, "코스닥 지수 알려줘")
            ]
            assert app.learning is not None and app.learning.shadow is not None
            await app.learning.drain()
            assert dict(app.learning.shadow.counts) == {
                "agree": 1,
                "disagree": 1,
                "dropped": 0,
                "error": 0,
            }
            return answers
        finally:
            await channel.close()
            await app.stop(grace=0)

    learned_answer, _ = asyncio.run(traffic())
    assert (learned_answer.label, learned_answer.index_version) != ("", first.version)
    [row] = ReviewStore(tmp_path / "review.sqlite").rows(reason="SHADOW_DISAGREE")
    assert (row.text, row.label, row.shadow_label, row.shadow_path) == (
        NONSENSE,
        "뉴스",
        None,
        "NO_MATCH",
    )
    capsys.readouterr()
    assert main(["shadow", "report", "--json", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compared"] == 2 and report["agreement"] == 0.5
    assert report["candidate"].endswith(f"@{first.version}")
