"""SubmitFeedback at its edges: an answer recorded only as a hash, no index to check the
label against, and a request_id no response could carry."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from qroute.cli import main
from tests.integration.test_review import (
    NONSENSE,
    Router,
    Serve,
    serve,  # noqa: F401  (the fixture)
    start_router,
    store_of,
    write_config,
)


async def test_feedback_names_a_recorded_answer_kept_as_a_hash_only(serve: Serve) -> None:  # noqa: F811
    router = await serve(review={"remember_requests": 1, "store_texts": "hash"})
    old = await router.classify(NONSENSE)
    await router.classify("코스닥 지수 알려줘")  # pushes `old` out of memory
    await router.drain()
    await router.feedback(request_id=old.request_id, correct_label="뉴스")
    await router.drain()
    [row] = store_of(router).rows(reason="FEEDBACK")
    [answer] = store_of(router).rows(reason="NO_MATCH")
    assert row.text is None and row.text_hash == answer.text_hash
    assert (row.feedback_label, row.path) == ("뉴스", "NO_MATCH")


async def test_a_label_cannot_be_checked_before_an_index_is_published(tmp_path: Path) -> None:
    app, channel = await start_router(write_config(tmp_path / "qroute.yaml", tmp_path))
    try:
        router = Router(app, channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await router.feedback(text="코스닥 지수 알려줘", correct_label="아무거나")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "correct_label" in (info.value.details() or "")
        await router.drain()
        assert store_of(router).rows(reason="FEEDBACK") == []
    finally:
        await channel.close()
        await app.stop(grace=0)


async def test_a_request_id_longer_than_any_response_carries_is_refused(serve: Serve) -> None:  # noqa: F811
    router = await serve()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.feedback(
            text="코스닥 지수 알려줘", request_id="x" * 10_000, correct_label="금융"
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id has 10000 characters" in (info.value.details() or "")


async def test_a_blank_text_beside_a_request_id_is_no_text(serve: Serve) -> None:  # noqa: F811
    """The proto lets request_id stand for the text: whitespace is no text either."""
    router = await serve()
    answer = await router.classify(NONSENSE)
    await router.feedback(text="  ", request_id=answer.request_id, correct_label="뉴스")
    await router.drain()
    [row] = store_of(router).rows(reason="FEEDBACK")
    assert (row.text, row.feedback_label) == (NONSENSE, "뉴스")


def test_review_list_refuses_a_reason_that_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt --reason would list nothing, as if no such rows were queued."""
    config = write_config(tmp_path / "qroute.yaml", tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["review", "list", "--reason", "NO_MATHC", "--config", str(config)])
    assert info.value.code == 2 and "NO_MATHC" in capsys.readouterr().err
