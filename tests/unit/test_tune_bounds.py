"""The tuner's promises: constraints met on their Wilson bound, per-label overrides only
where they earn it, cross-validated figures with ranges, calibration stored and reloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qroute.config import RouterSettings, ZeroShotSettings, load_settings
from qroute.evaluation.bounds import wilson
from qroute.evaluation.calibration import expected_calibration_error, fit_calibration
from qroute.evaluation.crossval import cross_validate
from qroute.evaluation.precompute import Precomputed
from qroute.evaluation.tune import decisions, predict, sweep
from qroute.evaluation.tuned import write_tuned
from qroute.routing.vote import calibrate
from qroute.types import Group, Hit, LabelScore

ROUTER = RouterSettings(k=3, group_size=1, similarity_threshold=0.5)
ZS = ZeroShotSettings(method="off")


def _row(label: str, similarity: float, nearest: str = "a") -> list[Group]:
    return [Group(nearest, (Hit(f"{nearest}{similarity}", "", nearest, similarity),))]


def _pre(rows: list[tuple[str, float]]) -> Precomputed:
    return Precomputed(
        [t for t, _ in rows], [_row(t, s) for t, s in rows], [{} for _ in rows], "", []
    )


# 100 out-of-scope rows nearest "a": 90 at 0.55, 7 at 0.65, 3 at 0.75. In scope: 100
# easy rows (0.8), 50 at 0.65, 50 at 0.55. Threshold 0.6 reaches recall 0.90 exactly
# (its Wilson bound is 0.83); 0.7 reaches 0.97 (bound 0.92) at a lower in-scope accuracy.
LUCKY = [
    *[("oos", 0.55)] * 90,
    *[("oos", 0.65)] * 7,
    *[("oos", 0.75)] * 3,
    *[("a", 0.8)] * 100,
    *[("a", 0.65)] * 50,
    *[("a", 0.55)] * 50,
]


def test_wilson_interval() -> None:
    low, high = wilson(90, 100)
    assert low == pytest.approx(0.8256, abs=1e-3) and high == pytest.approx(0.9448, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(10, 10)[0] < 0.75


def test_a_setting_that_meets_the_target_only_on_its_point_estimate_is_rejected() -> None:
    pre = _pre(LUCKY)
    options = {"objective": "oos", "target": 0.9, "oos_label": "oos", "ks": [1], "margins": [0.0]}
    thresholds = [0.5, 0.6, 0.7]
    point = sweep(pre, ROUTER, ZS, thresholds=thresholds, z=0.0, per_label=False, **options)
    assert point.best.similarity_threshold == 0.6  # the old rule: 0.90 >= 0.90
    bound = sweep(pre, ROUTER, ZS, thresholds=thresholds, per_label=False, **options)
    assert bound.best.similarity_threshold == 0.7
    assert bound.best.oos_recall == pytest.approx(0.97) and bound.best.meets_target


def test_no_setting_meets_the_bound_on_few_rows_and_the_choice_says_so() -> None:
    rows = [("oos", 0.55)] * 9 + [("oos", 0.75)] + [("a", 0.8)] * 20
    choice = sweep(
        _pre(rows), ROUTER, ZS, objective="oos", target=0.9, oos_label="oos",
        thresholds=[0.6, 0.7, 0.9], ks=[1], margins=[0.0], per_label=False,
    ).best  # fmt: skip
    # 10 of 10 out-of-scope rows is a recall whose lower bound is 0.72: not 0.9.
    assert not choice.meets_target and choice.oos_recall == 1.0


def _two_labels(noise: int) -> Precomputed:
    # Out-of-scope rows near "a" at 0.46 keep the shared threshold above 0.46; label "b"
    # wins 20 rows, right, at 0.45 (they fall back at the shared threshold), and
    # ``noise`` out-of-scope rows at 0.45 too, that a lower "b" threshold would answer.
    rows: list[tuple[str, list[Group]]] = [("a", _row("a", 0.8)) for _ in range(100)]
    rows += [("oos", _row("oos", 0.46, "a")) for _ in range(50)]
    rows += [("b", _row("b", 0.45, "b")) for _ in range(20)]
    rows += [("oos", _row("oos", 0.45, "b")) for _ in range(noise)]
    rows += [("oos", _row("oos", 0.3, "a")) for _ in range(300)]
    return Precomputed([t for t, _ in rows], [g for _, g in rows], [{} for _ in rows], "", [])


def test_per_label_overrides_only_where_they_earn_it_and_never_below_the_floor() -> None:
    grid = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.01)]
    options = {"oos_label": "oos", "ks": [1], "margins": [0.0], "thresholds": grid}
    clean = sweep(_two_labels(0), ROUTER, ZS, **options).best
    # Lowering b's threshold to 0.45 gains 20 rows and loses none: an override.
    assert clean.label_thresholds.get("b") == pytest.approx(0.45, abs=0.011)
    assert all(
        v >= clean.similarity_threshold - 0.1 - 1e-9 for v in clean.label_thresholds.values()
    )
    # 20 gained, 15 lost: net 5 over 35 changed rows is no better than coin flips.
    noisy = sweep(_two_labels(15), ROUTER, ZS, **options).best
    assert "b" not in noisy.label_thresholds
    floored = sweep(_two_labels(0), ROUTER, ZS, min_label_threshold=0.48, **options).best
    assert all(v >= 0.48 for v in floored.label_thresholds.values())
    off = sweep(_two_labels(0), ROUTER, ZS, per_label=False, **options).best
    assert off.label_thresholds == {}


def test_cross_validation_pools_held_out_figures_with_ranges() -> None:
    pre = _pre(LUCKY)
    validated = cross_validate(
        pre, ROUTER, ZS, folds=5, oos_label="oos", objective="oos", target=0.9,
        ks=[1], margins=[0.0], thresholds=[0.5, 0.6, 0.7],
    )  # fmt: skip
    assert validated.folds == 5 and len(validated.chosen) == 5
    low, high = validated.ranges["oos_recall"]
    recall = validated.figures["oos_recall"]
    assert recall is not None and low <= recall <= high
    # Every fold sees ~80 out-of-scope rows: 0.7 (and its 0.97 recall) is the only
    # setting whose bound can reach 0.9 there, so no fold may choose 0.6.
    assert all(t != 0.6 for _, t, _ in validated.chosen)


def _calibration_rows() -> Precomputed:
    # Two labels; a row's vote share grows with its margin, and rows with a clear
    # margin are right more often: the calibration must rise with the share.
    rng = np.random.default_rng(0)
    truth, groups = [], []
    for i in range(400):
        gap = rng.uniform(0.0, 0.2)
        right = rng.random() < 0.4 + 3 * gap
        winner, other = ("a", "b") if i % 2 else ("b", "a")
        truth.append(winner if right else other)
        groups.append(
            [
                Group(winner, (Hit(f"w{i}", "", winner, 0.7 + gap),)),
                Group(other, (Hit(f"o{i}", "", other, 0.7),)),
            ]
        )
    return Precomputed(truth, groups, [{} for _ in truth], "", [])


def test_calibration_is_monotone_written_by_tune_and_reloaded(tmp_path: Path) -> None:
    from qroute.evaluation.tune import Choice

    pre = _calibration_rows()
    router = ROUTER.model_copy(update={"similarity_threshold": 0.0, "k": 2})
    knots = fit_calibration(pre, router, ZS)
    assert set(knots) == {"knn"}
    xs, ys = zip(*knots["knn"], strict=True)
    assert list(xs) == sorted(set(xs)) and list(ys) == sorted(ys)
    assert ys[-1] - ys[0] > 0.3
    path = tmp_path / "qroute.yaml"
    path.write_text("# mine\nrouter:\n  k: 10\n", encoding="utf-8")
    choice = Choice(2, 0.0, 0.0, 0.5, {}, 0.7, 0.7, None, 1.0, 0.0)
    validated = cross_validate(pre, router, ZS, folds=3, ks=[2], margins=[0.0], thresholds=[0.0])
    write_tuned(
        path, choice, encoder="e", index_version="v", objective="accuracy", data="d",
        validated=validated, calibration=knots,
    )  # fmt: skip
    settings = load_settings(path)
    assert settings.router.calibration["knn"] == [tuple(k) for k in knots["knn"]]
    assert settings.tuned is not None and settings.tuned.folds == 3
    low, high = settings.tuned.ranges["accuracy"]
    assert low <= (settings.tuned.figures["accuracy"] or 0.0) <= high
    # Calibrated confidence is better calibrated than the raw vote share.
    raw_a, ids, pred, _ = decisions(pre, router, ZS)
    right = pred == np.array([ids[t] for t in pre.truth])
    raw_ece, _ = expected_calibration_error(raw_a.share, right)
    fitted_ece, _ = expected_calibration_error(calibrate(raw_a.share, knots["knn"]), right)
    assert fitted_ece < raw_ece


def test_the_tuner_reaches_a_heads_probability_margin() -> None:
    """With a head the margin is a difference of probabilities: out-of-scope queries the
    head is unsure of (0.55 against 0.45) are refused by a margin of tenths, which the
    similarity cannot do here (they sit as close to the examples as in-scope ones)."""
    truth = ["oos"] * 100 + ["a"] * 100 + ["b"] * 100
    groups = [
        [Group("a", (Hit("a1", "", "a", 0.8),)), Group("b", (Hit("b1", "", "b", 0.8),))]
        for _ in truth
    ]

    def head(label: str) -> list[LabelScore]:
        if label == "oos":
            return [LabelScore("a", 0.55), LabelScore("b", 0.45)]
        other = "b" if label == "a" else "a"
        return [LabelScore(label, 0.9), LabelScore(other, 0.1)]

    pre = Precomputed(truth, groups, [{} for _ in truth], "", [head(t) for t in truth])
    router = RouterSettings(k=2, group_size=1, similarity_threshold=0.5, use_head=True)
    found = sweep(
        pre,
        router,
        ZS,
        objective="oos",
        target=0.9,
        oos_label="oos",
        ks=[2],
        thresholds=[0.5, 0.7],
        per_label=False,
    )
    assert found.best.min_margin >= 0.1
    assert found.best.oos_recall == 1.0 and found.best.in_scope_accuracy == 1.0


def _unsure_head(noisy: int) -> Precomputed:
    """300 rows of labels a / b whose neighbours are right with a clear lead; the head is
    right and sure on the rest, but on ``noisy`` rows it leans the wrong way, unsure."""
    truth = (["a", "b"] * 150)[:300]
    groups, heads = [], []
    for i, label in enumerate(truth):
        other = "b" if label == "a" else "a"
        groups.append(
            [
                Group(label, (Hit(f"{label}{i}", "", label, 0.9),)),
                Group(other, (Hit(f"{other}{i}", "", other, 0.75),)),
            ]
        )
        if i < noisy:
            heads.append([LabelScore(other, 0.58), LabelScore(label, 0.42)])
        else:
            heads.append([LabelScore(label, 0.9), LabelScore(other, 0.1)])
    return Precomputed(truth, groups, [{} for _ in truth], "", heads)


def test_the_tuner_mixes_in_the_vote_only_where_it_corrects_the_head(tmp_path: Path) -> None:
    router = RouterSettings(k=2, group_size=1, similarity_threshold=0.0, use_head=True)
    options = {"ks": [2], "thresholds": [0.0], "margins": [0.0], "per_label": False}
    corrected = sweep(_unsure_head(60), router, ZS, **options).best  # type: ignore[arg-type]
    assert corrected.vote_weight is not None and 0.0 < corrected.vote_weight < 1.0
    assert corrected.accuracy == 1.0  # the head alone: 0.8
    # Where the head is never wrong, mixing gains nothing and a tie keeps the head alone.
    assert sweep(_unsure_head(0), router, ZS, **options).best.vote_weight == 0.0  # type: ignore[arg-type]
    # Without the head's scores there is nothing to mix: not swept, not written.
    assert sweep(_pre([("a", 0.8)] * 10), ROUTER, ZS).best.vote_weight is None
    path = tmp_path / "qroute.yaml"
    write_tuned(path, corrected, encoder="e", index_version="v", objective="accuracy", data="d")
    assert load_settings(path).router.vote_weight == corrected.vote_weight
    r, _ = corrected.settings(router, ZS)
    assert predict(_unsure_head(60), r, ZS) == _unsure_head(60).truth
