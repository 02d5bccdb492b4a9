"""Fault harness (issue 13): the router under load while things go wrong around it.

On the embedded store in lexical mode (no model), in a temporary directory, on
127.0.0.1 only. The router is a real ``python -m qroute serve`` process, the indexer
real ``python -m qroute index`` processes; the clients are grpc.aio.

1. kill -9 of the router under load, then a restart (its failures are counted apart);
2. load at ``--concurrency`` for ``--duration`` seconds, and under it, in order:
   a valid and an invalid config hot reload, a re-index (publish), kill -9 of an
   indexer mid-work (once its new version directory exists), malformed tables (each
   must exit 2 with no traceback and leave the live index alone), a store fault (CURRENT names a missing version for a
   while), and a fuzz pass of malformed requests (random and mutated protobuf bytes,
   invalid UTF-8, huge fields; each must be answered INVALID_ARGUMENT), while a probe
   times the health check;
3. SIGTERM under load: no call may end CANCELLED.

It prints one table and exits 1 when a must-be-zero figure is not zero, when health
p99 during index switches (from 1 s before each publish the watcher sees to 3 polls
after it) is >= 50 ms, or when the server is unhealthy after the faults; the p99 while
any indexer process runs (it competes with the router for the cores) is printed apart; JSON goes to bench/results/faults.json (--out).

    python bench/faults.py [--quick] [--duration 60] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from _results import write_results
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qroute.v1 import router_pb2 as pb  # noqa: E402
from qroute.v1 import router_pb2_grpc  # noqa: E402

CLASSIFY = "/qroute.v1.RouterService/Classify"
HEALTH_P99_LIMIT_MS = 50.0


_YAML = YAML(typ="safe", pure=True)


def _load_yaml(text: str) -> Any:
    return _YAML.load(text)


def _dump_yaml(data: Any) -> str:
    out = io.StringIO()
    _YAML.dump(data, out)
    return out.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    # The checkout under test wins over any installed copy, also in the subprocesses.
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Tally:
    """What the load clients saw, by phase."""

    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    # (received at, index_version) of every answer, for the stale check.
    answers: list[tuple[float, str]] = field(default_factory=list)

    def failed(self) -> dict[str, int]:
        return {code: n for code, n in self.codes.items() if code != "OK"}


@dataclass
class World:
    work: Path
    config: Path
    table: Path
    store_root: Path  # <location>/<collection>
    port: int
    poll_s: float
    router: subprocess.Popen[bytes] | None = None
    router_log: Path | None = None
    publishes: list[tuple[float, str]] = field(default_factory=list)
    # Around each publish the watcher sees: the router's switch to the new version.
    switch_windows: list[tuple[float, float]] = field(default_factory=list)
    # While an indexer process runs (it competes with the router for the cores).
    indexing_windows: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def current(self) -> str:
        return (self.store_root / "CURRENT").read_text(encoding="utf-8").strip()


def _setup(work: Path, poll_s: float) -> World:
    settings = _load_yaml((ROOT / "examples" / "qroute-lexical.yaml").read_text())
    port = _free_port()
    settings["store"]["location"] = str(work / "qdrant")
    settings["server"].update(
        bind=f"127.0.0.1:{port}", metrics_port=0, index_poll_s=poll_s, config_poll_s=poll_s
    )
    config = work / "qroute.yaml"
    config.write_text(_dump_yaml(settings), encoding="utf-8")
    table = work / "queries.csv"
    shutil.copy(ROOT / "examples" / "queries.csv", table)
    root = work / "qdrant" / settings["store"]["collection"]
    return World(work, config, table, root, port, poll_s)


def _index_cmd(world: World, table: Path) -> list[str]:
    return [sys.executable, "-m", "qroute", "index", "--config", str(world.config),
            "--no-progress", str(table)]  # fmt: skip


async def _run(cmd: list[str], timeout: float = 120.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=_env()
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return int(proc.returncode or 0), out.decode("utf-8", "replace")


async def _watch_current(world: World, stop: asyncio.Event) -> None:
    """Record every publish (CURRENT naming a version that exists) as it happens, by
    whichever indexer, so the stale check compares against what was really published."""
    while not stop.is_set():
        try:
            name = world.current()
        except OSError:
            name = ""
        fresh = not world.publishes or world.publishes[-1][1] != name
        if name and fresh and (world.store_root / name).is_dir():
            now = time.monotonic()
            world.publishes.append((now, name))
            world.switch_windows.append((now - 1.0, now + 3 * world.poll_s))
        await asyncio.sleep(0.02)


async def _publish(world: World, table: Path) -> None:
    """Re-index ``table`` (the watcher records the publish)."""
    start = time.monotonic()
    code, out = await _run(_index_cmd(world, table))
    world.indexing_windows.append((start, time.monotonic()))
    if code != 0:
        world.notes.append(f"re-index failed ({code}): {out.strip()[-300:]}")


def _start_router(world: World, attempt: int) -> None:
    world.router_log = world.work / f"router-{attempt}.log"
    log = world.router_log.open("wb")
    world.router = subprocess.Popen(
        [sys.executable, "-m", "qroute", "serve", "--config", str(world.config)],
        stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=world.work,
    )  # fmt: skip


async def _health(channel: grpc.aio.Channel, timeout: float = 1.0) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def _wait_serving(world: World, limit_s: float = 60.0) -> float:
    start = time.monotonic()
    async with grpc.aio.insecure_channel(world.address) as channel:
        while time.monotonic() - start < limit_s:
            if await _health(channel) == "SERVING":
                return time.monotonic() - start
            if world.router is not None and world.router.poll() is not None:
                raise RuntimeError(
                    f"router exited {world.router.returncode}: see {world.router_log}"
                )
            await asyncio.sleep(0.1)
    raise RuntimeError(f"router not SERVING after {limit_s:.0f} s: see {world.router_log}")


async def _load(
    world: World, texts: list[str], concurrency: int, stop: asyncio.Event, tally: Tally
) -> None:
    async with grpc.aio.insecure_channel(world.address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        rng = random.Random(7)

        async def worker() -> None:
            while not stop.is_set():
                request = pb.ClassifyRequest(text=rng.choice(texts))
                tally.requests += 1
                try:
                    reply = await stub.Classify(request, timeout=5.0)
                except grpc.aio.AioRpcError as exc:
                    tally.codes[exc.code().name] += 1
                    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                        await asyncio.sleep(0.05)  # no busy loop on a gone server
                    continue
                tally.codes["OK"] += 1
                tally.answers.append((time.monotonic(), reply.index_version))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _probe(address: str, out: Path) -> None:
    """Time health checks every 10 ms until SIGTERM; a process of its own, so that the
    load clients' event loop does not add to the latency it measures. CLOCK_MONOTONIC
    is system-wide, so its times compare with the harness's."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with grpc.insecure_channel(address) as channel, out.open("w") as handle:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stopping:
            start = time.monotonic()
            with contextlib.suppress(grpc.RpcError):
                stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
            handle.write(f"{start} {(time.monotonic() - start) * 1000}\n")
            time.sleep(0.01)


def _start_probe(world: World) -> tuple[subprocess.Popen[bytes], Path]:
    out = world.work / "health.txt"
    cmd = [sys.executable, __file__, "--probe", world.address, "--out", str(out)]
    return subprocess.Popen(cmd, env=_env()), out


def _stop_probe(probe: subprocess.Popen[bytes], out: Path) -> list[tuple[float, float]]:
    probe.send_signal(signal.SIGTERM)
    probe.wait(10)
    rows = [line.split() for line in out.read_text().splitlines()]
    return [(float(at), float(ms)) for at, ms in rows if at and ms]


# -- malformed input ---------------------------------------------------------------


def _bad_tables(work: Path, rng: random.Random) -> list[Path]:
    """Tables the indexer must refuse with exit code 2 and one line."""
    cases: dict[str, bytes] = {
        "empty.csv": b"",
        "header_only.csv": b"text,label\n",
        "no_label.csv": b"text\nhello\n",
        "invalid_utf8.csv": b"text,label\n\xff\xfe\xfa bad,x\nok,y\n",
        "binary.csv": bytes(rng.getrandbits(8) for _ in range(2048)),
        "empty_text.csv": b"text,label\n,a\n ,b\n",
        "ragged.csv": b'text,label\n"unterminated,a\nb\n',
        "huge_field.csv": b"text,label\n" + b"x" * 2_000_000 + b",a\n",
        "bad.jsonl": b'{"text": "a", "label": 1}\n{not json\n',
        "bad.parquet": b"PAR1" + bytes(rng.getrandbits(8) for _ in range(256)) + b"PAR1",
    }
    # A seeded generator on top: random rows with random damage.
    for i in range(3):
        rows = [b"text,label"]
        for _ in range(rng.randint(1, 20)):
            text = bytes(rng.choice(b'ab,"\n\xc3\xff ') for _ in range(rng.randint(0, 12)))
            rows.append(text + b"," + rng.choice([b"", b"x", b"\xff"]))
        cases[f"random_{i}.csv"] = b"\n".join(rows)
    paths = []
    for name, data in cases.items():
        path = work / "bad" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def _well_formed(data: bytes, max_chars: int) -> bool:
    """Would a correct server answer ``data`` with anything but INVALID_ARGUMENT?"""
    try:
        request = pb.ClassifyRequest.FromString(data)
    except DecodeError:
        return False
    return bool(request.text.strip()) and len(request.text) <= max_chars and request.top_labels >= 0


def _malformed_requests(rng: random.Random, count: int, max_chars: int) -> list[tuple[str, bytes]]:
    valid = pb.ClassifyRequest(text="코스피 지금 몇 포인트야", top_labels=2).SerializeToString()
    out: list[tuple[str, bytes]] = [
        ("invalid_utf8", b"\x0a\x04\xff\xfe\xfd\xfc"),
        ("invalid_utf8_tail", b"\x0a\x05abc\xc3\x28"),
        ("huge_text", pb.ClassifyRequest(text="가" * (max_chars * 100)).SerializeToString()),
        ("empty", b""),
        ("truncated", valid[:-3]),
        ("bad_length", b"\x0a\x7fshort"),
        ("bad_wire_type", b"\x0f\x01\x02"),
    ]
    while len(out) < count:
        if rng.random() < 0.5:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
            kind = "random"
        else:
            buf = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] = rng.getrandbits(8)
            data, kind = bytes(buf), "mutated"
        if not _well_formed(data, max_chars):
            out.append((kind, data))
    return [(k, d) for k, d in out if not _well_formed(d, max_chars)]


async def _fuzz(world: World, rng: random.Random, count: int, max_chars: int) -> Counter[str]:
    """Codes of the answers to malformed requests, as ``kind:CODE``."""
    seen: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(world.address) as channel:
        call = channel.unary_unary(CLASSIFY, request_serializer=None, response_deserializer=None)
        for kind, data in _malformed_requests(rng, count, max_chars):
            try:
                await call(data, timeout=5.0)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            seen[f"{kind}:{code}"] += 1
    return seen


# -- the run -------------------------------------------------------------------------


async def _faults_under_load(
    world: World, rng: random.Random, fuzz_count: int, max_chars: int, max_tables: int
) -> dict[str, Any]:
    """The scheduled faults, one after another, while the load runs."""
    out: dict[str, Any] = {}
    # Hot reload: valid (a threshold), then invalid (must keep the old config), then back.
    original = world.config.read_text(encoding="utf-8")
    changed = _load_yaml(original)
    changed["router"]["similarity_threshold"] = 0.31
    world.config.write_text(_dump_yaml(changed), encoding="utf-8")
    await asyncio.sleep(3 * world.poll_s)
    world.config.write_text("router: [this is: not valid\n", encoding="utf-8")
    await asyncio.sleep(3 * world.poll_s)
    world.config.write_text(original, encoding="utf-8")
    await asyncio.sleep(world.poll_s)

    # Re-index under load: a bigger table, published.
    bigger = world.work / "bigger.csv"
    rows = list(csv.reader(world.table.open(encoding="utf-8")))
    with bigger.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(rows[0])
        writer.writerows(rows[1:])
        writer.writerows([f"{text} {i}", label] for i in range(20) for text, label in rows[1:])
    await _publish(world, bigger)
    # Repeated switches: the health probe's p99 around each publish is the figure.
    for table in (world.table, bigger, world.table):
        await _publish(world, table)

    # kill -9 of an indexer mid-work (once its new version directory exists): the
    # published version must stay, and a rerun must publish.
    before = world.current()
    dirs = {p.name for p in world.store_root.iterdir()}
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *_index_cmd(world, bigger), "--full", env=_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    while proc.returncode is None and not ({p.name for p in world.store_root.iterdir()} - dirs):
        await asyncio.sleep(0.005)
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        out["indexer_killed_mid_work"] = 1
    else:
        out["indexer_killed_mid_work"] = 0
        world.notes.append(f"the indexer to kill finished first (exit {proc.returncode})")
    world.indexing_windows.append((start, time.monotonic()))
    await asyncio.sleep(0.1)
    out["indexer_kill_changed_current"] = int(world.current() != before)
    await _publish(world, world.table)  # recovers after the kill
    out["indexer_rerun_after_kill_published"] = int(world.current() != before)

    # Malformed tables: exit 2, one line, no traceback, live index unchanged.
    bad: list[str] = []
    tables = _bad_tables(world.work, rng)[:max_tables]
    before = world.current()
    gate = asyncio.Semaphore(3)  # a few at once: each is a Python process

    async def refuse(path: Path) -> None:
        async with gate:
            start = time.monotonic()
            code, text = await _run(_index_cmd(world, path))
            world.indexing_windows.append((start, time.monotonic()))
            if code != 2 or "Traceback" in text:
                last = text.strip().splitlines()[-1:] or [""]
                bad.append(f"{path.name}: exit {code}: {last[0][:160]}")

    await asyncio.gather(*(refuse(path) for path in tables))
    if world.current() != before:
        bad.append(f"a malformed table changed the live index to {world.current()}")
    out["malformed_tables"] = len(tables)
    out["malformed_tables_mishandled"] = bad

    # Store fault while serving: CURRENT names a version that is not there.
    current = world.store_root / "CURRENT"
    kept = current.read_text(encoding="utf-8")
    tmp = world.store_root / ".CURRENT.faults.tmp"
    tmp.write_text("no_such_version_v999\n", encoding="utf-8")
    os.replace(tmp, current)
    await asyncio.sleep(3 * world.poll_s)
    tmp.write_text(kept, encoding="utf-8")
    os.replace(tmp, current)
    await asyncio.sleep(world.poll_s)

    out["fuzz"] = await _fuzz(world, rng, fuzz_count, max_chars)
    return out


def _stale(tally: Tally, publishes: list[tuple[float, str]], grace_s: float) -> tuple[int, str]:
    """Answers that, 3 poll periods after a publish, still report another version; and
    the first one, for the report."""
    stale, first = 0, ""
    for at, version in tally.answers:
        due = [i for i, (t, _) in enumerate(publishes) if t + grace_s <= at]
        # The latest publish past its grace, or any later one (still switching to it).
        allowed = {v for _, v in publishes[due[-1] :]} if due else set()
        if due and version not in allowed:
            stale += 1
            first = first or f"answered {version!r}, published {publishes[due[-1]][1]!r}"
    return stale, first


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def _main(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="qroute-faults-"))
    world = _setup(work, args.poll)
    settings = _load_yaml(world.config.read_text())
    max_chars = int(settings.get("router", {}).get("max_text_chars", 1000))
    texts = [row["text"] for row in csv.DictReader(world.table.open(encoding="utf-8"))]
    code, out = await _run(_index_cmd(world, world.table))
    if code != 0:
        raise SystemExit(f"first index failed: {out}")
    watching = asyncio.Event()
    watcher = asyncio.create_task(_watch_current(world, watching))
    await asyncio.sleep(0.1)
    results: dict[str, Any] = {}
    try:
        # 1. kill -9 of the router under load, and a restart.
        _start_router(world, 0)
        await _wait_serving(world)
        stop = asyncio.Event()
        kill_tally = Tally()
        load = asyncio.create_task(_load(world, texts, args.concurrency, stop, kill_tally))
        await asyncio.sleep(args.kill_phase_s)
        assert world.router is not None
        world.router.send_signal(signal.SIGKILL)
        world.router.wait()
        _start_router(world, 1)
        results["router_restart_s"] = round(await _wait_serving(world), 2)
        await asyncio.sleep(1.0)
        stop.set()
        await load
        results["router_kill_failed"] = dict(kill_tally.failed())

        # 2. load with the faults under it.
        await asyncio.sleep(1.0)
        rss_before = _rss_kib(world.router.pid)
        stop = asyncio.Event()
        tally = Tally()
        started = time.monotonic()
        load = asyncio.create_task(_load(world, texts, args.concurrency, stop, tally))
        probe, probe_out = _start_probe(world)
        await asyncio.sleep(min(2.0, args.duration / 4))
        faults = await _faults_under_load(world, rng, args.fuzz, max_chars, args.tables)
        await asyncio.sleep(max(0.0, args.duration - (time.monotonic() - started)))
        stop.set()
        await load
        health = _stop_probe(probe, probe_out)
        elapsed = time.monotonic() - started
        rss_after = _rss_kib(world.router.pid)
        async with grpc.aio.insecure_channel(world.address) as channel:
            health_after = await _health(channel)

        # 3. SIGTERM under load.
        stop = asyncio.Event()
        term_tally = Tally()
        load = asyncio.create_task(_load(world, texts, args.concurrency, stop, term_tally))
        await asyncio.sleep(1.0)
        world.router.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = await asyncio.to_thread(world.router.wait, 30)
        except subprocess.TimeoutExpired:
            exit_code = None
            world.router.kill()
        await asyncio.sleep(0.5)
        stop.set()
        await load
    finally:
        watching.set()
        await watcher
        if world.router is not None and world.router.poll() is None:
            world.router.kill()
            world.router.wait()

    switching = [ms for at, ms in health if any(lo <= at <= hi for lo, hi in world.switch_windows)]
    indexing = [ms for at, ms in health if any(lo <= at <= hi for lo, hi in world.indexing_windows)]
    windows = world.switch_windows + world.indexing_windows
    steady = [ms for at, ms in health if not any(lo <= at <= hi for lo, hi in windows)]
    fuzz: Counter[str] = faults["fuzz"]
    fuzz_wrong = sum(n for key, n in fuzz.items() if not key.endswith(":INVALID_ARGUMENT"))
    tracebacks = sum(
        (work / f"router-{i}.log").read_text(errors="replace").count("Traceback") for i in (0, 1)
    )
    p99 = _p99(switching)
    stale, stale_example = _stale(tally, world.publishes, 3 * world.poll_s)
    if stale_example:
        world.notes.append(f"first stale answer: {stale_example}")
    figures: dict[str, Any] = {
        "requests": tally.requests,
        "failed_by_code": tally.failed(),
        "failed": sum(tally.failed().values()),
        "cancelled_at_shutdown": term_tally.codes.get("CANCELLED", 0),
        "shutdown_by_code": dict(term_tally.codes),
        "sigterm_exit_code": exit_code,
        "stale_answers": stale,
        "health_p99_ms_switching": None if p99 is None else round(p99, 2),
        "health_samples_switching": len(switching),
        "health_p99_ms_indexing": round(_p99(indexing) or 0.0, 2),
        "health_samples_indexing": len(indexing),
        "health_p99_ms_steady": round(_p99(steady) or 0.0, 2),
        "health_samples_steady": len(steady),
        "health_p99_ms_all": round(_p99([ms for _, ms in health]) or 0.0, 2),
        "health_after": health_after,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "malformed_requests": sum(fuzz.values()),
        "malformed_not_invalid_argument": fuzz_wrong,
        "fuzz_by_kind_code": dict(fuzz),
        "malformed_tables": faults["malformed_tables"],
        "malformed_tables_mishandled": len(faults["malformed_tables_mishandled"]),
        "indexer_killed_mid_work": faults["indexer_killed_mid_work"],
        "indexer_kill_changed_current": faults["indexer_kill_changed_current"],
        "indexer_rerun_after_kill_published": faults["indexer_rerun_after_kill_published"],
        "router_log_tracebacks": tracebacks,
        "publishes": len(world.publishes) - 1,
        "load_s": round(elapsed, 1),
        "throughput_rps": round(tally.codes.get("OK", 0) / elapsed, 1),
        **results,
    }
    problems = [name for name in (
        "failed", "cancelled_at_shutdown", "stale_answers", "malformed_not_invalid_argument",
        "malformed_tables_mishandled", "indexer_kill_changed_current", "router_log_tracebacks",
    ) if figures[name]]  # fmt: skip
    if p99 is None or p99 >= HEALTH_P99_LIMIT_MS:
        problems.append("health_p99_ms_switching")
    if health_after != "SERVING":
        problems.append("health_after")
    if exit_code != 0:
        problems.append("sigterm_exit_code")
    if not faults["indexer_rerun_after_kill_published"]:
        problems.append("indexer_rerun_after_kill_published")

    print(f"\nqroute faults ({'quick' if args.quick else 'full'}): concurrency "
          f"{args.concurrency}, {elapsed:.0f} s load, poll {args.poll} s, work dir {work}")  # fmt: skip
    print(f"{'figure':36} {'value':>24}  must")
    for name, value in figures.items():
        if name in ("fuzz_by_kind_code", "shutdown_by_code"):
            continue
        must = "FAIL" if name in problems else ""
        shown = (
            ",".join(f"{k}={v}" for k, v in value.items()) or "-"
            if isinstance(value, dict)
            else str(value)
        )
        print(f"{name:36} {shown:>24}  {must}")
    for line in faults["malformed_tables_mishandled"]:
        print(f"  table {line}")
    for note in world.notes:
        print(f"  note: {note}")
    print("  fuzz: " + ", ".join(f"{k}={v}" for k, v in sorted(fuzz.items())))
    print(f"RESULT: {'FAIL (' + ', '.join(problems) + ')' if problems else 'PASS'}")

    write_results(args.out, {
        "bench": "faults",
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "figures": figures,
        "malformed_tables_mishandled": faults["malformed_tables_mishandled"],
        "notes": world.notes,
        "problems": problems,
    })  # fmt: skip
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="load seconds (default 60)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--poll", type=float, default=0.5, help="server.index_poll_s/config_poll_s")
    parser.add_argument("--fuzz", type=int, default=300, help="malformed requests")
    parser.add_argument("--tables", type=int, default=100, help="malformed tables (at most)")
    parser.add_argument("--kill-phase-s", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--quick", action="store_true", help="~15 s development run")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    parser.add_argument("--probe", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        _probe(args.probe, args.out)
        return
    if args.quick:
        args.duration, args.fuzz, args.kill_phase_s, args.tables = 8.0, 60, 1.5, 6
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
