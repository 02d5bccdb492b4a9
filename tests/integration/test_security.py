"""The router's security and its clients' load balancing, over real routers on 127.0.0.1:
TLS and mTLS (certificates made here, rotated while it runs), bearer tokens (every
outcome and its status code, the file re-read), ``router.return_texts``, and calls spread
over two replicas by the client's round_robin policy."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from qroute_client import AsyncClient, Client, PermissionDenied, Unauthenticated, Unavailable
from qroute_indexer import run_index
from qroute_server.app import RouterApp
from qroute_server.auth import parse_tokens
from qroute_server.tls import is_loopback

from qroute.cli import main
from qroute.config import Settings
from qroute.errors import ConfigError
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.testing import BagOfWordsEncoder
from qroute.v1 import router_pb2 as pb
from tests.integration.certificates import ROUTER_NAMES, certificates, issue, write_pair
from tests.integration.conftest import ServeRouter

ROWS = [
    ("코스닥 지수 알려줘", "금융"),
    ("환율 얼마야", "금융"),
    ("내일 부산 비 와", "날씨"),
    ("서울 미세먼지 어때", "날씨"),
]
TOKEN = "s3cret-token"
HASHED = "another-token"

Start = Callable[..., Awaitable[tuple[RouterApp, str]]]


@pytest.fixture
async def start_router(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> AsyncIterator[Start]:
    """``await start_router(name, router={...}, server={...})``: a router over its own
    store (``name`` keeps replicas apart) and its address, or the start's exception."""
    apps: list[RouterApp] = []

    async def start(name: str = "a", **sections: dict[str, Any]) -> tuple[RouterApp, str]:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        table = directory / "table.csv"
        with table.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([("text", "label"), *ROWS])
        sections.setdefault("zero_shot", {"method": "off"})
        settings = make_settings(
            store={"location": str(directory / "store"), "collection": "test"}, **sections
        )
        encoder = BagOfWordsEncoder()
        await run_index(settings, table, encoder=encoder, progress=False)
        app = RouterApp(settings)
        apps.append(app)
        port = await app.start()
        store = EmbeddedStore(settings.store.location, settings.store.collection)
        await app.load(Classifier(settings, encoder, None, store))
        return app, f"127.0.0.1:{port}"

    yield start
    for app in apps:
        await app.stop(grace=0)


async def _label(address: str, **options: Any) -> str | None:
    async with AsyncClient(address, timeout=5, max_attempts=1, **options) as client:
        return (await client.classify("환율 얼마야")).label


# ------------------------------------------------------------------ TLS


async def test_tls_with_a_self_signed_certificate(start_router: Start, tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path / "tls", "router", *issue("router", None, ROUTER_NAMES))
    _, address = await start_router(server={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    assert await _label(address, ca_file=cert) == "금융"
    assert await _label(address, ca_file=cert, server_name="localhost") == "금융"
    # In plaintext, or verified against the system's roots: no connection.
    for options in ({}, {"tls": True}):
        with pytest.raises(Unavailable):
            await _label(address, **options)


async def test_mtls_refuses_a_client_without_a_certificate_of_its_ca(
    start_router: Start, tmp_path: Path
) -> None:
    pem = certificates(tmp_path / "pki")
    stranger = certificates(tmp_path / "other")  # a client certificate of another CA
    _, address = await start_router(
        server={
            "tls": {
                "cert_file": str(pem["server.pem"]),
                "key_file": str(pem["server.key"]),
                "client_ca_file": str(pem["ca.pem"]),
            }
        }
    )
    ca = pem["ca.pem"]
    mine = {"cert_file": pem["client.pem"], "key_file": pem["client.key"]}
    assert await _label(address, ca_file=ca, **mine) == "금융"
    theirs = {"cert_file": stranger["client.pem"], "key_file": stranger["client.key"]}
    for options in ({"ca_file": ca}, {"ca_file": ca, **theirs}):
        with pytest.raises(Unavailable):
            await _label(address, **options)


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in one rename, as a Secret's symlink swap does."""
    staged = path.with_suffix(path.suffix + ".new")
    staged.write_bytes(data)
    os.replace(staged, path)


async def test_certificate_rotation_needs_no_restart(start_router: Start, tmp_path: Path) -> None:
    old = certificates(tmp_path / "old")
    new = certificates(tmp_path / "new")
    live = tmp_path / "live"
    cert, key = write_pair(live, "tls", *issue("unused", None))  # replaced just below
    _replace(cert, old["server.pem"].read_bytes())
    _replace(key, old["server.key"].read_bytes())
    _, address = await start_router(server={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    assert await _label(address, ca_file=old["ca.pem"]) == "금융"
    with pytest.raises(Unavailable):
        await _label(address, ca_file=new["ca.pem"])

    _replace(key, new["server.key"].read_bytes())
    _replace(cert, new["server.pem"].read_bytes())
    # A new connection sees the new certificate; one verifying by the old CA no longer
    # connects.
    assert await _label(address, ca_file=new["ca.pem"]) == "금융"
    with pytest.raises(Unavailable):
        await _label(address, ca_file=old["ca.pem"])

    # Half-written files (no PEM at all) keep the certificate in use.
    _replace(cert, b"")
    assert await _label(address, ca_file=new["ca.pem"]) == "금융"


async def test_unreadable_tls_or_tokens_files_end_the_start(
    start_router: Start, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.pem")
    not_pem = tmp_path / "key.txt"
    not_pem.write_text("not a key", encoding="utf-8")
    pem = certificates(tmp_path / "pki")
    with pytest.raises(ConfigError, match=r"server\.tls\.cert_file .*missing\.pem"):
        await start_router("a", server={"tls": {"cert_file": missing, "key_file": missing}})
    with pytest.raises(ConfigError, match=r"server\.tls\.key_file .* holds no PEM private key"):
        await start_router(
            "b", server={"tls": {"cert_file": str(pem["server.pem"]), "key_file": str(not_pem)}}
        )
    with pytest.raises(ConfigError, match=r"server\.auth\.tokens_file .*missing"):
        await start_router("c", server={"auth": {"tokens_file": str(tmp_path / "missing")}})


def test_tls_settings_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        Settings(server={"tls": {"cert_file": "a.pem"}})
    with pytest.raises(ValueError, match="client_ca_file"):
        Settings(server={"tls": {"client_ca_file": "ca.pem"}})


async def test_plaintext_on_a_reachable_address_is_warned_about(
    start_router: Start, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qroute_server.app"):
        await start_router("a")
        assert "plaintext" not in caplog.text
        await start_router("b", server={"bind": "0.0.0.0:0"})
    assert "serving plaintext on 0.0.0.0:0" in caplog.text
    assert [is_loopback(a) for a in ("[::1]:1", "localhost:1", "unix:/run/q", "10.0.0.1:1")] == [
        True,
        True,
        True,
        False,
    ]


# ------------------------------------------------------------------ tokens


def _tokens_file(directory: Path, *lines: str) -> Path:
    path = directory / "tokens"
    _replace(path, ("\n".join(lines) + "\n").encode())
    return path


async def _reflect(address: str, token: str | None = None) -> set[str]:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        call = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=5)
        responses = [r async for r in call]
    return {s.name for s in responses[0].list_services_response.service}


async def test_token_auth_outcomes_and_status_codes(
    start_router: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hashed = hashlib.sha256(HASHED.encode()).hexdigest()
    tokens = _tokens_file(tmp_path, "# callers", "", TOKEN, f"  sha256:{hashed.upper()}  ")
    with caplog.at_level(logging.DEBUG):
        _, address = await start_router(server={"auth": {"tokens_file": str(tokens)}})
        with pytest.raises(Unauthenticated, match="Bearer"):
            await _label(address)
        with pytest.raises(PermissionDenied):
            await _label(address, token="wrong")
        assert await _label(address, token=TOKEN) == "금융"
        assert await _label(address, token=HASHED) == "금융"

        def sync_calls() -> tuple[str, int]:
            # Health answers without a token (orchestrators' probes carry none); a batch
            # is refused like a single call.
            with Client(address, timeout=5, max_attempts=1) as client:
                status = client.health()
                with pytest.raises(Unauthenticated):
                    client.classify_batch(["환율 얼마야"])
            with Client(address, timeout=5, token=TOKEN) as client:
                return status, len(client.classify_batch(["환율 얼마야", "내일 부산 비 와"]))

        assert await asyncio.to_thread(sync_calls) == ("SERVING", 2)
        # Reflection is off by default under auth: not even a token gets it.
        for token in (None, TOKEN):
            with pytest.raises(grpc.aio.AioRpcError) as off:
                await _reflect(address, token)
            assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert TOKEN not in caplog.text and "wrong" not in caplog.text and HASHED not in caplog.text


async def test_reflection_turned_on_under_auth_needs_a_token(
    start_router: Start, tmp_path: Path
) -> None:
    tokens = _tokens_file(tmp_path, TOKEN)
    _, address = await start_router(
        server={"auth": {"tokens_file": str(tokens)}, "reflection": True}
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _reflect(address)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "qroute.v1.RouterService" in await _reflect(address, TOKEN)
    # Without auth it is on by default; it can be turned off.
    _, open_address = await start_router("b")
    assert "grpc.health.v1.Health" in await _reflect(open_address)
    _, closed = await start_router("c", server={"reflection": False})
    with pytest.raises(grpc.aio.AioRpcError) as off:
        await _reflect(closed)
    assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def _accepted(address: str, token: str) -> bool:
    try:
        return await _label(address, token=token) == "금융"
    except PermissionDenied:
        return False


async def test_the_tokens_file_is_re_read_when_it_changes(
    start_router: Start, tmp_path: Path
) -> None:
    tokens = _tokens_file(tmp_path, TOKEN)
    _, address = await start_router(server={"auth": {"tokens_file": str(tokens)}})
    assert await _accepted(address, TOKEN)
    _tokens_file(tmp_path, "rotated-token")
    await _eventually(lambda: _accepted(address, "rotated-token"))
    assert not await _accepted(address, TOKEN)
    # A change that does not parse keeps the tokens in use.
    _tokens_file(tmp_path, "sha256:abc")
    await asyncio.sleep(1.2)
    assert await _accepted(address, "rotated-token")


def test_a_bad_hashed_token_names_its_line() -> None:
    with pytest.raises(ConfigError, match="tokens, line 2: a sha256: entry needs 64 hex"):
        parse_tokens("ok\nsha256:12zz\n", "tokens")
    assert parse_tokens("# only a comment\n\n", "tokens") == frozenset()


async def test_the_cli_reaches_a_router_with_tls_and_a_token(
    start_router: Start,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pem = certificates(tmp_path / "pki")
    tokens = _tokens_file(tmp_path, TOKEN)
    _, address = await start_router(
        server={
            "tls": {"cert_file": str(pem["server.pem"]), "key_file": str(pem["server.key"])},
            "auth": {"tokens_file": str(tokens)},
        }
    )
    monkeypatch.setenv("QROUTE_CLIENT__ADDRESS", address)
    monkeypatch.setenv("QROUTE_CLIENT__CA_FILE", str(pem["ca.pem"]))
    monkeypatch.setenv("QROUTE_CLIENT__SERVER_NAME", "localhost")
    assert await asyncio.to_thread(main, ["health"]) == 0
    # Without the token: one line naming the refusal, exit code 1.
    assert await asyncio.to_thread(main, ["classify", "환율 얼마야"]) == 1
    assert capsys.readouterr().err.strip().startswith("qroute: UNAUTHENTICATED: ")
    monkeypatch.setenv("QROUTE_CLIENT__TOKEN", TOKEN)
    assert await asyncio.to_thread(main, ["classify", "--json", "환율 얼마야"]) == 0
    assert '"label": "금융"' in capsys.readouterr().out


def test_tls_auth_and_reflection_need_a_restart() -> None:
    running = Settings()
    changed = Settings(
        server={
            "tls": {"cert_file": "c.pem", "key_file": "k.pem"},
            "auth": {"tokens_file": "tokens"},
            "reflection": False,
        },
        router={"return_texts": False},
    )
    applied, kept = running.reloaded(changed)
    assert sorted(kept) == ["server.auth", "server.reflection", "server.tls"]
    assert applied.server == running.server
    assert applied.router.return_texts is False  # hot


# ------------------------------------------------------------------ return_texts


async def test_return_texts_off_leaves_the_texts_out_and_reloads(
    serve_router: ServeRouter,
) -> None:
    router = await serve_router(
        ROWS,
        encoder=BagOfWordsEncoder(),
        nli=False,
        zero_shot={"method": "off"},
        router={"return_texts": False},
    )
    answer = await router.classify("환율 얼마야")
    assert answer.label == "금융" and answer.neighbours
    assert all(n.text == "" and n.row_id and n.label for n in answer.neighbours)
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text="내일 부산 비 와")])
    batch = await router.stub.ClassifyBatch(request, timeout=10)
    assert all(n.text == "" for r in batch.responses for n in r.neighbours)

    router.write_config(router={"return_texts": True})

    async def texts_back() -> bool:
        return (await router.classify("환율 얼마야")).neighbours[0].text == "환율 얼마야"

    await router.wait_for(texts_back)


# ------------------------------------------------------------------ load balancing


async def test_round_robin_spreads_calls_over_two_replicas(start_router: Start) -> None:
    # Different settings give each replica its own config_version, which every answer
    # carries: it says which replica answered.
    first, one = await start_router("a", router={"max_text_chars": 1000})
    second, two = await start_router("b", router={"max_text_chars": 999})
    versions = {first.settings.version, second.settings.version}
    assert len(versions) == 2
    target = "ipv4:" + ",".join((one, two))

    async def answered_by(**options: Any) -> set[str]:
        async with AsyncClient(target, timeout=5, **options) as client:
            answers = [await client.classify("환율 얼마야") for _ in range(8)]
        return {a.config_version for a in answers}

    assert await answered_by() == versions
    # pick_first: one connection, every call to the same replica.
    assert len(await answered_by(load_balancing="pick_first")) == 1


async def test_round_robin_skips_a_replica_that_is_not_serving(start_router: Start) -> None:
    first, one = await start_router("a", router={"max_text_chars": 1000})
    second, two = await start_router("b", router={"max_text_chars": 999})
    await second._set_health(serving=False)
    target = "ipv4:" + ",".join((one, two))
    async with AsyncClient(target, timeout=5, skip_unhealthy=True) as client:
        answers = [await client.classify("환율 얼마야") for _ in range(8)]
    assert {a.config_version for a in answers} == {first.settings.version}
    # Without it, a router's own NOT_SERVING is an answer, not a refusal.
    async with AsyncClient(two, timeout=5) as client:
        assert await client.health() == "NOT_SERVING"
