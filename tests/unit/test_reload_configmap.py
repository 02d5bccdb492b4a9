"""A Kubernetes ConfigMap volume updates by a symlink swap, never by writing the file:
``qroute.yaml -> ..data/qroute.yaml`` and ``..data -> ..<timestamp>``, and the kubelet
re-points ``..data`` at a new directory in one rename. The watcher must see it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from qroute_server.reload import ConfigWatcher

from qroute.config import Settings


def _configmap_dir(volume: Path, stamp: str, text: str) -> None:
    (volume / stamp).mkdir()
    (volume / stamp / "qroute.yaml").write_text(text, encoding="utf-8")


def _point_data_at(volume: Path, stamp: str) -> None:
    # What the kubelet does: a new link beside the old one, renamed over it (atomic).
    (volume / "..data_tmp").symlink_to(stamp)
    os.replace(volume / "..data_tmp", volume / "..data")


async def test_watcher_sees_a_configmap_symlink_swap(tmp_path: Path) -> None:
    volume = tmp_path / "etc-qroute"
    volume.mkdir()
    _configmap_dir(volume, "..2026_12_02_10_00_00.1", "router:\n  k: 5\n")
    _point_data_at(volume, "..2026_12_02_10_00_00.1")
    (volume / "qroute.yaml").symlink_to("..data/qroute.yaml")

    applied: list[Settings] = []
    rejected: list[str] = []

    async def apply(settings: Settings) -> None:
        applied.append(settings)

    watcher = ConfigWatcher(volume / "qroute.yaml", lambda: 0.01, apply, rejected.append)
    await watcher.check()
    assert applied == []  # nothing changed yet

    _configmap_dir(volume, "..2026_12_02_10_05_00.2", "router:\n  k: 7\n")
    _point_data_at(volume, "..2026_12_02_10_05_00.2")
    assert (volume / "qroute.yaml").is_symlink()  # the file itself was never written

    await watcher.check()
    assert [s.router.k for s in applied] == [7]
    assert rejected == []


async def test_a_valid_config_whose_apply_failed_is_tried_again(tmp_path: Path) -> None:
    """Switching the NLI fallback on before its model directory is mounted fails the
    apply; once it is there, the same file applies without being edited again."""
    config = tmp_path / "qroute.yaml"
    config.write_text("router:\n  k: 5\n", encoding="utf-8")
    mounted = False
    applied: list[Settings] = []
    rejected: list[str] = []

    async def apply(settings: Settings) -> None:
        if not mounted:
            raise OSError("nli model directory /models/nli does not exist")
        applied.append(settings)

    watcher = ConfigWatcher(config, lambda: 0.01, apply, rejected.append)
    config.write_text("router:\n  k: 7\n", encoding="utf-8")
    with pytest.raises(OSError):
        await watcher.check()
    await watcher.check()  # too soon: the retry waits
    assert applied == []
    mounted = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not applied:
        assert loop.time() < deadline, "the failed config was never tried again"
        await asyncio.sleep(0.01)
        await watcher.check()
    assert [s.router.k for s in applied] == [7]
    await watcher.check()  # applied: not again
    assert len(applied) == 1 and rejected == []
