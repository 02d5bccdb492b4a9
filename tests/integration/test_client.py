"""qroute_client against real routers on 127.0.0.1, and against a scripted router (to
inject failures, read the metadata that arrives, and serve TLS)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from qroute_client import (
    AsyncClient,
    Client,
    DecisionPath,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from qroute_client.v1 import router_pb2 as pb
from qroute_client.v1 import router_pb2_grpc

from qroute.cli import main
from qroute.testing import BagOfWordsEncoder
from tests.conftest import ROOT
from tests.integration.certificates import certificates
from tests.integration.conftest import RunningRouter, ServeRouter

ROWS = [
    ("코스닥 지수 알려줘", "금융"),
    ("환율 얼마야", "금융"),
    ("내일 부산 비 와", "날씨"),
    ("서울 미세먼지 어때", "날씨"),
    ("오펜하이머 등장인물 알려줘", "영화"),
]


async def _router(serve_router: ServeRouter) -> RunningRouter:
    return await serve_router(
        ROWS, encoder=BagOfWordsEncoder(), nli=False, zero_shot={"method": "off"}
    )


# ------------------------------------------------------------------ the real router


async def test_sync_and_async_clients_classify_one_text_and_a_batch(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router)

    def sync_calls() -> tuple[Any, ...]:
        with Client(router.address, timeout=10) as client:
            return (
                client.health(),
                client.classify("코스닥 지수 알려줘", top_labels=2),
                client.classify_batch(["환율 얼마야", "내일 부산 비 와"]),
            )

    status, one, batch = await asyncio.to_thread(sync_calls)
    assert status == "SERVING"
    assert (one.label, one.path) == ("금융", DecisionPath.KNN)
    assert one.neighbours[0].text == "코스닥 지수 알려줘"
    assert one.neighbours[0].similarity == pytest.approx(1.0)
    assert one.top_labels[0].label == "금융" and len(one.top_labels) == 2
    assert one.index_version.startswith("test_v")
    assert [a.label for a in batch] == ["금융", "날씨"]

    async with AsyncClient(router.address, timeout=10) as client:
        assert await client.health() == "SERVING"
        answer = await client.classify("서울 미세먼지 어때", allowed_labels=["날씨", "영화"])
        answers = await client.classify_batch(["오펜하이머 등장인물 알려줘"])
    assert answer.label == "날씨" and answer.thresholds.similarity == pytest.approx(0.99)
    assert [a.label for a in answers] == ["영화"]


async def test_a_refused_request_raises_invalid_argument(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    async with AsyncClient(router.address, timeout=10) as client:
        with pytest.raises(InvalidArgument) as empty:
            await client.classify("")
        with pytest.raises(InvalidArgument) as unknown:
            await client.classify("환율", allowed_labels=["스포츠"])
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "text" in empty.value.message
    assert "스포츠" in str(unknown.value)
    # Whatever google.rpc details this router attaches are unpacked; none is no error.
    assert isinstance(empty.value.field_violations, list)


# ------------------------------------------------------------------ a scripted router


class ScriptedRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers "echo", after failing the first ``unavailable`` calls; "" is refused with a
    google.rpc.BadRequest, "busy" with RESOURCE_EXHAUSTED and a RetryInfo."""

    def __init__(self, unavailable: int = 0) -> None:
        self.unavailable = unavailable
        self.calls = 0
        self.metadata: list[dict[str, str]] = []

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        return await self._answer(request, context)

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        return pb.ClassifyBatchResponse(
            responses=[await self._answer(r, context) for r in request.requests]
        )

    async def GetIndexInfo(
        self, request: pb.GetIndexInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetIndexInfoResponse:
        # What `qroute classify` asks before a batch: how many texts one request takes.
        return pb.GetIndexInfoResponse(limits=pb.RequestLimits(max_batch_texts=256))

    async def _answer(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        self.calls += 1
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        if self.unavailable > 0:
            self.unavailable -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are loading")
        if not request.text:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="text", description="text is empty"
            )
            await _abort(
                context,
                code_pb2.INVALID_ARGUMENT,
                "text is empty",
                error_details_pb2.BadRequest(field_violations=[violation]),
            )
        if request.text == "busy":
            delay = duration_pb2.Duration(nanos=500_000_000)
            await _abort(
                context,
                code_pb2.RESOURCE_EXHAUSTED,
                "the queue is full",
                error_details_pb2.RetryInfo(retry_delay=delay),
            )
        return pb.ClassifyResponse(
            label="echo", confidence=0.75, path=pb.DECISION_PATH_KNN, reason=request.text
        )


async def _abort(context: grpc.aio.ServicerContext, code: int, message: str, detail: Any) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status = status_pb2.Status(code=code, message=message, details=[packed])
    await context.abort_with_status(rpc_status.to_status(status))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def scripted() -> AsyncIterator[Serve]:
    """``await scripted(servicer, port=0, credentials=None)``: the port it listens on."""
    servers: list[grpc.aio.Server] = []

    async def serve(
        servicer: ScriptedRouter,
        port: int = 0,
        credentials: grpc.ServerCredentials | None = None,
    ) -> int:
        server = grpc.aio.server()
        router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)
        address = f"127.0.0.1:{port}"
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
        await server.start()
        servers.append(server)
        return bound

    yield serve
    for server in servers:
        await server.stop(grace=0)


async def test_google_rpc_details_are_unpacked_into_the_exception(scripted: Serve) -> None:
    port = await scripted(ScriptedRouter())
    async with AsyncClient(f"127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(InvalidArgument) as refused:
            await client.classify("")
        with pytest.raises(ResourceExhausted) as busy:
            await client.classify("busy")
    assert refused.value.field_violations == [FieldViolation("text", "text is empty")]
    assert str(refused.value) == "INVALID_ARGUMENT: text is empty"
    assert busy.value.retry_delay_s == 0.5

    def sync_call() -> InvalidArgument:
        with (
            Client(f"127.0.0.1:{port}", timeout=5) as client,
            pytest.raises(InvalidArgument) as caught,
        ):
            client.classify("")
        return caught.value

    assert (await asyncio.to_thread(sync_call)).field_violations[0].field == "text"


async def test_unavailable_is_retried_by_the_channel(scripted: Serve) -> None:
    flaky = ScriptedRouter(unavailable=2)
    port = await scripted(flaky)
    async with AsyncClient(f"127.0.0.1:{port}", timeout=5) as client:
        answer = await client.classify("hello")
    assert (answer.label, flaky.calls) == ("echo", 3)

    once = ScriptedRouter(unavailable=1)
    port = await scripted(once)
    async with AsyncClient(f"127.0.0.1:{port}", timeout=5, max_attempts=1) as client:
        with pytest.raises(Unavailable, match="models are loading"):
            await client.classify("hello")


async def test_a_router_that_starts_a_moment_later_is_reached(scripted: Serve) -> None:
    port = _free_port()
    async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
        call = asyncio.create_task(client.classify("hello"))
        await asyncio.sleep(0.3)
        assert not call.done()
        await scripted(ScriptedRouter(), port=port)
        answer = await call
    assert answer.label == "echo"


async def test_the_token_is_sent_as_bearer_metadata_on_every_call(scripted: Serve) -> None:
    servicer = ScriptedRouter()
    port = await scripted(servicer)
    async with AsyncClient(f"127.0.0.1:{port}", timeout=5, token="s3cret") as client:
        await client.classify("a")
        await client.classify_batch(["b"])
    await asyncio.to_thread(_sync_classify, f"127.0.0.1:{port}", token="s3cret")
    assert [m.get("authorization") for m in servicer.metadata] == ["Bearer s3cret"] * 3


def _sync_classify(address: str, **options: Any) -> str:
    with Client(address, timeout=5, **options) as client:
        return client.classify("hello").label


# ------------------------------------------------------------------ TLS


async def test_tls_and_mtls(scripted: Serve, tmp_path: Path) -> None:
    pem = certificates(tmp_path)
    server_pair = [(pem["server.key"].read_bytes(), pem["server.pem"].read_bytes())]
    tls_port = await scripted(
        ScriptedRouter(), credentials=grpc.ssl_server_credentials(server_pair)
    )
    mtls_port = await scripted(
        ScriptedRouter(),
        credentials=grpc.ssl_server_credentials(
            server_pair, root_certificates=pem["ca.pem"].read_bytes(), require_client_auth=True
        ),
    )
    tls = f"127.0.0.1:{tls_port}"
    mtls = f"127.0.0.1:{mtls_port}"
    ca = pem["ca.pem"]
    mine = {"cert_file": pem["client.pem"], "key_file": pem["client.key"]}

    assert await asyncio.to_thread(_sync_classify, tls, tls=True, ca_file=ca) == "echo"
    async with AsyncClient(mtls, timeout=5, ca_file=ca, **mine) as client:
        assert (await client.classify("hello")).label == "echo"
    # Without the client's certificate, or in plaintext, the routers refuse.
    for address, options in ((mtls, {"ca_file": ca}), (tls, {})):
        async with AsyncClient(address, timeout=2, max_attempts=1, **options) as client:
            with pytest.raises(Unavailable):
                await client.classify("hello")
    # Not verified against this CA (the system's roots): refused as well.
    async with AsyncClient(tls, timeout=2, tls=True, max_attempts=1) as client:
        with pytest.raises(Unavailable):
            await client.classify("hello")


# ------------------------------------------------------------------ the CLI


async def test_cli_dials_server_bind_and_sends_the_configured_token(
    serve_router: ServeRouter,
    scripted: Serve,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    router = await _router(serve_router)
    port = router.address.rpartition(":")[2]
    # The router's own bind, as `qroute serve` reads it: 0.0.0.0 is dialled on loopback.
    monkeypatch.setenv("QROUTE_SERVER__BIND", f"0.0.0.0:{port}")
    assert await asyncio.to_thread(main, ["health"]) == 0
    assert await asyncio.to_thread(main, ["classify", "--json", "코스닥 지수 알려줘"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "SERVING"
    answer = json.loads(lines[-1])
    assert (answer["text"], answer["label"], answer["path"]) == (
        "코스닥 지수 알려줘",
        "금융",
        "DECISION_PATH_KNN",
    )
    assert answer["neighbours"][0]["similarity"] == pytest.approx(1.0)

    servicer = ScriptedRouter()
    scripted_port = await scripted(servicer)
    monkeypatch.setenv("QROUTE_CLIENT__ADDRESS", f"127.0.0.1:{scripted_port}")
    monkeypatch.setenv("QROUTE_CLIENT__TOKEN", "s3cret")
    assert await asyncio.to_thread(main, ["classify", "hello", "world"]) == 0
    assert [m.get("authorization") for m in servicer.metadata] == ["Bearer s3cret"] * 2
    # --address overrides the config; a refusal is one line and exit code 1.
    code = await asyncio.to_thread(main, ["classify", "--address", router.address, ""])
    assert code == 1
    assert capsys.readouterr().err.strip().startswith("qroute: INVALID_ARGUMENT: ")


def test_cli_names_an_unreadable_certificate_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("QROUTE_CLIENT__TLS", "true")
    monkeypatch.setenv("QROUTE_CLIENT__CA_FILE", str(tmp_path / "missing.pem"))
    assert main(["health"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qroute: client settings: cannot read the CA file ")
    assert "missing.pem" in err and "\n" not in err


# ------------------------------------------------------------------ the Node example


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/node's locked @grpc/grpc-js and @grpc/proto-loader, installed by `npm ci`.
    Node is part of the test environment (here and in CI): a failed install fails."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail(
            "node and npm are part of the test environment (.ci/run installs them): "
            "apt-get install nodejs npm"
        )
    folder = ROOT / "tests" / "node"
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci in tests/node failed:\n{result.stderr}"
    return folder / "node_modules"


def _node_example(tmp_path: Path) -> Path:
    page = (ROOT / "docs" / "clients.md").read_text(encoding="utf-8")
    [code] = re.findall(r"```js\n(.*?)```", page, flags=re.DOTALL)
    script = tmp_path / "example.js"
    script.write_text(code, encoding="utf-8")
    return script


async def _run_node(
    script: Path, node_modules: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        cwd=ROOT,
        env={**os.environ, "NODE_PATH": str(node_modules), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        ["node"], process.returncode, out.decode("utf-8"), err.decode("utf-8")
    )


async def test_the_node_example_of_the_docs_runs(
    serve_router: ServeRouter, scripted: Serve, node_modules: Path, tmp_path: Path
) -> None:
    script = _node_example(tmp_path)
    router = await _router(serve_router)
    result = await _run_node(script, node_modules, ROUTER_ADDRESS=router.address)
    assert result.returncode == 0, result.stderr
    answer, top = result.stdout.strip().splitlines()
    assert answer.startswith("금융 DECISION_PATH_KNN 1.000 ")
    assert top.startswith("금융 ") and top.count(", ") >= 1  # top_labels reached the router

    servicer = ScriptedRouter(unavailable=1)
    port = await scripted(servicer)
    result = await _run_node(
        script, node_modules, ROUTER_ADDRESS=f"127.0.0.1:{port}", ROUTER_TOKEN="s3cret"
    )
    assert result.returncode == 0, result.stderr
    assert servicer.calls == 2  # UNAVAILABLE was retried
    assert [m.get("authorization") for m in servicer.metadata] == ["Bearer s3cret"] * 2


async def test_cli_classifies_a_file_longer_than_one_request_may_be(
    serve_router: ServeRouter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`qroute classify --file` with more lines than router.max_batch_texts: the CLI sends
    them in requests of the router's limit (a user cannot "split the batch" of a file)."""
    router = await serve_router(
        ROWS,
        encoder=BagOfWordsEncoder(),
        nli=False,
        zero_shot={"method": "off"},
        router={"max_batch_texts": 4},
    )
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(["코스닥 지수 알려줘"] * 10) + "\n", encoding="utf-8")
    code = await asyncio.to_thread(
        main, ["classify", "--address", router.address, "--json", "--file", str(texts)]
    )
    assert code == 0, capsys.readouterr().err
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(answers) == 10 and {a["label"] for a in answers} == {"금융"}
