"""``qroute eval``'s threshold curve (threshold.png, threshold.json) is drawn at the
configured settings: with the index's linear head, at the configured router.vote_weight,
not at whichever vote weight the curve's sweep would have liked best."""

from __future__ import annotations

import argparse

import pytest

from qroute.cli.evaluation import _threshold_curve
from qroute.config import Settings
from tests.unit.test_tune_bounds import _unsure_head


@pytest.mark.parametrize(("vote_weight", "accuracy"), [(0.0, 0.8), (1.0, 1.0)])
def test_the_curve_uses_the_configured_vote_weight(vote_weight: float, accuracy: float) -> None:
    # The head alone is wrong on 60 of 300 rows whose neighbours are right.
    settings = Settings(
        router={
            "k": 2,
            "group_size": 1,
            "similarity_threshold": 0.0,
            "use_head": True,
            "vote_weight": vote_weight,
        },
        zero_shot={"method": "off"},
    )
    curve = _threshold_curve(settings, argparse.Namespace(oos_label=None), _unsure_head(60))
    assert curve["threshold"][0] == 0.0
    assert curve["accuracy"][0] == pytest.approx(accuracy)
