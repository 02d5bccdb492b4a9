"""The test process's exit status is the suite's result, whatever the interpreter's
finalisation does afterwards (tests/conftest.py, pytest_unconfigure)."""

from __future__ import annotations

import atexit
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = "CRASH_AT_EXIT_PROBE"  # not QROUTE_*: the hermetic fixture would drop it
probe_only = pytest.mark.skipif(PROBE not in os.environ, reason="run by the tests below")


@probe_only
def test_probe_passes() -> None:
    # Reads address 0 while the interpreter finalises: a segmentation fault.
    atexit.register(ctypes.string_at, 0)


@probe_only
def test_probe_fails() -> None:
    atexit.register(ctypes.string_at, 0)
    raise AssertionError("failed on purpose")


@pytest.mark.parametrize(
    ("probe", "status", "summary"), [("passes", 0, "1 passed"), ("fails", 1, "1 failed")]
)
def test_exit_status_survives_a_crash_at_finalisation(
    probe: str, status: int, summary: str
) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_probe_{probe}",
        ],
        cwd=ROOT,
        env={**os.environ, PROBE: "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == status, run.stdout + run.stderr
    assert summary in run.stdout
