"""The proto/ contract keeps to buf's STANDARD and COMMENTS lint rules and buf's format,
and stays wire- and source-compatible with the last released qroute.v1 (buf breaking
against git commit RELEASED). buf comes from tools/buf (see tests/buf.py)."""

from __future__ import annotations

import subprocess

import pytest

from tests.buf import ROOT, buf

# The last released proto: `buf breaking` compares against it. Move it forward on a
# release, never to skip a finding.
RELEASED = "4597150"


def _buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(buf()), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_lint_is_clean() -> None:
    result = _buf("lint")
    assert result.returncode == 0, f"buf lint:\n{result.stdout}{result.stderr}"


def test_format_is_clean() -> None:
    result = _buf("format", "-d")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", f"run `tools/buf/node_modules/.bin/buf format -w`:\n{result.stdout}"


def test_no_breaking_change_since_the_release() -> None:
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{RELEASED}^{{commit}}"], cwd=ROOT, check=False
    )
    if known.returncode != 0:
        pytest.fail(
            f"commit {RELEASED} (the released proto) is not in this clone: "
            "fetch the full history (`git fetch --unshallow`)"
        )
    # buf clones the repository to a limited depth before it looks for the ref, and
    # failed once the release was 219 commits back: ask for the whole way to it.
    since = subprocess.run(
        ["git", "rev-list", "--count", f"{RELEASED}..HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    depth = int(since.stdout) + 1
    against = f".git#ref={RELEASED},subdir=proto,depth={depth}"
    result = _buf("breaking", "proto", "--against", against)
    assert result.returncode == 0, f"buf breaking:\n{result.stdout}{result.stderr}"
