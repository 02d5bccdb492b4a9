"""A model setting starting with ``~`` whose home cannot be found (an unknown user, or no
HOME and no passwd entry, as in a container run under an arbitrary uid) is a
ModelLoadError naming the setting, not a RuntimeError traceback from pathlib."""

from __future__ import annotations

import pytest

from qroute.errors import ModelLoadError
from qroute.hub import resolve_model


def test_an_unknown_home_names_the_setting() -> None:
    with pytest.raises(ModelLoadError, match="QROUTE_ENCODER__MODEL"):
        resolve_model("~no-such-user-qroute/models/ko", "encoder", "QROUTE_ENCODER__MODEL")
