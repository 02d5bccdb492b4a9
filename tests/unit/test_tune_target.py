"""``qroute tune --target`` is a share: 90 (meaning 90%) is refused naming the flag,
before any search, rather than tuned into "no setting meets the target"."""

from __future__ import annotations

from pathlib import Path

import pytest

from qroute.cli import main


@pytest.mark.parametrize("target", ["90", "-0.1", "nan"])
def test_a_target_outside_zero_to_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("retrieval:\n  mode: lexical\n", encoding="utf-8")
    argv = ["tune", "none.csv", "--config", str(config), "--objective", "oos", "--target", target]
    assert main(argv) == 2
    assert f"--target {target}" in capsys.readouterr().err
