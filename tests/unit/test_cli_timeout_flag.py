"""A --timeout the client cannot use is refused naming the flag the user typed, not as a
problem of the "client settings" (exit 2, one line)."""

from __future__ import annotations

import pytest

from qroute.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "--timeout", "0", "hello"],
        ["health", "--timeout", "-1"],
        ["info", "--timeout", "0"],
    ],
)
def test_a_non_positive_timeout_names_the_flag(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qroute: --timeout must be a positive number of seconds, got ")
    assert "client settings" not in err and "\n" not in err
