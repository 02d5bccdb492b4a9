"""The install path (`make install`, hence `make demo`, `make test`, .ci/run; and the
Dockerfile, which reads the same scripts/pip-torch-args) must get PyTorch's CPU build,
also on a machine that reaches only PyPI and no local wheel index.

pip's dry run resolves the Makefile's own torch arguments against PyPI with this
machine's pip config left out (--isolated), keeping only its find-links (a local wheel
is a legitimate source: some machines reach nothing else). Needs PyPI: where it is
unreachable the test fails, it does not skip.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CUDA = re.compile(r"^(nvidia-|cuda-)", re.IGNORECASE)


def _torch_args() -> list[str]:
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "print-torch-args"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return shlex.split(out.stdout)


def _local_find_links() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    links = []
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            links += value.strip("'\"").split()
    return [arg for link in dict.fromkeys(links) for arg in ("--find-links", link)]


def _resolve(
    args: list[str], *, local_wheels: bool, deps: bool = True
) -> tuple[int, list[str], str]:
    """pip's exit code, the distributions it would install for ``args`` from PyPI (and
    this machine's local wheels if asked), with their requirements if not ``deps``,
    and pip's stderr."""
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
        "--quiet", "--report", "-", "--isolated", "--disable-pip-version-check",
        "--index-url", "https://pypi.org/simple",
        # An unreachable extra index is retried per package with backoff: minutes here,
        # where download.pytorch.org does not resolve. One try shows the same result.
        "--retries", "0", "--timeout", "15",
        *(_local_find_links() if local_wheels else []),
        *([] if deps else ["--no-deps"]), *args,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if run.returncode != 0:
        return run.returncode, [], run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    names = [str(item["metadata"]["name"]) for item in report["install"]]
    if not deps:
        names += [
            re.split(r"[ ;<>=!~\[(]", str(req), maxsplit=1)[0]
            for item in report["install"]
            for req in item["metadata"].get("requires_dist", [])
        ]
    return 0, names, run.stderr


def _cuda(names: list[str]) -> list[str]:
    return [name for name in names if CUDA.match(name)]


def test_install_path_gets_the_cpu_build_with_a_local_wheel() -> None:
    args = _torch_args()
    assert any(re.match(r"torch\b", arg) for arg in args), args
    code, names, stderr = _resolve(args, local_wheels=True)
    assert code == 0, f"pip could not resolve {args}:\n{stderr[-2000:]}"
    assert "torch" in {name.lower() for name in names}
    assert not _cuda(names), f"`make install` would pull the CUDA build: {_cuda(names)}"


def test_install_path_never_gets_the_cuda_build_from_pypi() -> None:
    """With PyPI alone it resolves to the CPU build where PyTorch's index is reachable,
    and fails to find torch where it is not (as here); it never takes PyPI's CUDA build."""
    args = _torch_args()
    code, names, stderr = _resolve(args, local_wheels=False)
    if code != 0:
        # pip's wording varies ("No matching distribution", "ResolutionImpossible").
        assert "torch==2.13.0+cpu" in stderr or "for torch" in stderr, stderr[-2000:]
    assert not _cuda(names), f"`make install` would pull the CUDA build: {_cuda(names)}"


def test_a_bare_pin_gets_the_cuda_build_from_pypi() -> None:
    """The checks above can fail, and PyPI is reachable: PyPI's torch==2.13.0 is the
    CUDA build (its requirements are enough to tell; resolving them takes a minute)."""
    code, names, stderr = _resolve(["torch==2.13.0"], local_wheels=False, deps=False)
    assert code == 0, f"pip could not resolve torch from PyPI (is it reachable?):\n{stderr[-2000:]}"
    assert _cuda(names), names
