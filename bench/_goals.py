"""bench_eval.py --goals: issue 15's figures, on dev splits or cross-validation only.

For each configuration: index the training rows once (kept under --cache and reused by a
later run with the same configuration), search every dev row once, then

- dev accuracy as configured, always answering (no dev row chose anything);
- the tuner on dev (``sweep``, objective and target as given), its chosen settings, their
  per-label overrides and the Wilson lower bound of the constrained figure it reports;
- ``cross_validate`` over dev: each fold decided by settings chosen on the other folds;
- the calibration measured the same way: chosen and fitted on the other folds, applied to
  the held-out fold; the pooled answers give the ECE and the reliability diagram.

ParaKQC has no dev split: its rows are split into 5 folds by paraphrase set (``group``),
each fold searched in an index of the other four, and the pooled held-out rows play dev
(inner folds again by paraphrase set).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _results import CachedEncoder, write_table

from qroute.config import Settings, TableSettings
from qroute.embedding.dense import SentenceTransformerEncoder
from qroute.evaluation.bounds import wilson
from qroute.evaluation.calibration import expected_calibration_error, fit_calibration
from qroute.evaluation.crossval import cross_validate
from qroute.evaluation.plots import plot_reliability
from qroute.evaluation.precompute import Precomputed, precompute
from qroute.evaluation.tune import decisions, sweep
from qroute.routing.classifier import Classifier
from qroute.routing.vote import answer_confidence
from qroute.store.embedded import EmbeddedStore
from qroute.table import read_table
from qroute.types import Example

# ../shared/datasets beside the checkout, as the other scripts read it; a worktree one
# level deeper reads the same folder.
_HERE = Path(__file__).resolve().parent.parent
_DATA = next(
    (
        p / "shared" / "datasets"
        for p in (_HERE.parent, _HERE.parent.parent)
        if (p / "shared").is_dir()
    ),
    _HERE.parent / "shared" / "datasets",
)


def _fold_of(rows: Sequence[Example], folds: int, by_group: bool) -> np.ndarray:
    """A fold per row: by paraphrase set where asked, else stratified by label with
    crossval's own assignment."""
    from qroute.evaluation.crossval import _folds

    if by_group:
        return np.array([int(e.extra["group"]) % folds for e in rows])
    return _folds([e.label for e in rows], folds, 0)


def _calibrated_cv(
    pre: Precomputed, settings: Settings, fold: np.ndarray, options: dict[str, Any]
) -> tuple[list[float], list[bool], list[float]]:
    """Per held-out fold: settings chosen and calibration fitted on the other folds, the
    fold's answers' (calibrated confidence, right), and the uncalibrated confidences."""
    none = settings.table.none_label
    conf: list[float] = []
    raw: list[float] = []
    right: list[bool] = []
    for f in sorted(set(fold.tolist())):
        train = pre.subset(np.flatnonzero(fold != f).tolist())
        test = pre.subset(np.flatnonzero(fold == f).tolist())
        choice = sweep(train, settings.router, settings.zero_shot, none_label=none, **options)
        router, zs = choice.best.settings(settings.router, settings.zero_shot)
        knots = fit_calibration(
            train, router, zs, oos_label=options.get("oos_label"), none_label=none
        )
        calibrated = router.model_copy(update={"calibration": knots})
        a, ids, pred, used = decisions(test, calibrated, zs, none)
        names = {i: label for label, i in ids.items()}
        c = answer_confidence(a, used, knots)
        r = answer_confidence(a, used, {})
        for i, p in enumerate(pred.tolist()):
            if p != -1:
                conf.append(float(c[i]))
                raw.append(float(r[i]))
                right.append(names[p] == test.truth[i])
    return conf, right, raw


def measure(
    name: str,
    pre: Precomputed,
    settings: Settings,
    fold: np.ndarray,
    objective: str,
    target: float,
    oos_label: str | None,
    out: Path,
) -> dict[str, Any]:
    options: dict[str, Any] = {"objective": objective, "target": target, "oos_label": oos_label}
    none = settings.table.none_label
    always = settings.router.model_copy(
        update={"similarity_threshold": -1.0, "min_margin": 0.0, "label_thresholds": {}}
    )
    _, ids, pred, _ = decisions(pre, always, settings.zero_shot, none)
    names = {i: label for label, i in ids.items()}
    inside = [i for i, t in enumerate(pre.truth) if t != oos_label]
    always_acc = sum(names.get(int(pred[i])) == pre.truth[i] for i in inside) / len(inside)
    started = time.perf_counter()
    chosen = sweep(pre, settings.router, settings.zero_shot, none_label=none, **options).best
    n_oos = sum(t == oos_label for t in pre.truth)
    bound = (
        None
        if chosen.oos_recall is None
        else round(wilson(round(chosen.oos_recall * n_oos), n_oos)[0], 4)
    )
    validated = cross_validate(
        pre, settings.router, settings.zero_shot, folds=5, none_label=none, **options
    )
    shared = cross_validate(
        pre,
        settings.router,
        settings.zero_shot,
        folds=5,
        none_label=none,
        per_label=False,
        **options,
    )
    shared_choice = sweep(
        pre, settings.router, settings.zero_shot, none_label=none, per_label=False, **options
    ).best
    conf, right, raw = _calibrated_cv(pre, settings, fold, options)
    ece, bins = expected_calibration_error(conf, right, bins=15)
    raw_ece, _ = expected_calibration_error(raw, right, bins=15)
    out.mkdir(parents=True, exist_ok=True)
    plot_reliability(bins, ece, out / f"reliability-{name}.png")
    return {
        "config": name,
        "rows": len(pre.truth),
        "oos_rows": n_oos,
        "in_scope_accuracy_always_answering": round(always_acc, 4),
        "chosen": {
            "k": chosen.k,
            "similarity_threshold": chosen.similarity_threshold,
            "min_margin": chosen.min_margin,
            "vote_weight": chosen.vote_weight,
            "label_overrides": len(chosen.label_thresholds),
            "fitted": chosen.figures(),
            "oos_recall_lower_bound": bound,
            "meets_target": chosen.meets_target,
        },
        "cross_validated": {
            "figures": validated.figures,
            "ranges": validated.ranges,
            "chosen_per_fold": validated.chosen,
        },
        "no_label_thresholds": {
            "k": shared_choice.k,
            "similarity_threshold": shared_choice.similarity_threshold,
            "fitted": shared_choice.figures(),
            "cross_validated": shared.figures,
            "ranges": shared.ranges,
        },
        "ece_cross_validated": round(ece, 4),
        "ece_uncalibrated": round(raw_ece, 4),
        "answered": len(conf),
        "reliability_png": str(out / f"reliability-{name}.png"),
        "tune_seconds": round(time.perf_counter() - started, 1),
    }


CONFIGS: dict[str, dict[str, Any]] = {
    # dataset, retrieval mode, encoder ("minilm", "e5" or None), head, analyser, objective
    "clinc150-minilm": {"data": "clinc150", "mode": "dense", "model": "minilm", "head": False},
    "clinc150-minilm-ft-head": {
        "data": "clinc150",
        "mode": "dense",
        "model": "minilm-ft",
        "head": True,
    },
    # The training split's out-of-scope rows indexed under table.none_label: the head
    # learns a none class (the vote never answers it).
    "clinc150-minilm-head-none": {
        "data": "clinc150",
        "mode": "dense",
        "model": "minilm",
        "head": True,
        "none": True,
    },
    "clinc150-minilm-ft-head-none": {
        "data": "clinc150",
        "mode": "dense",
        "model": "minilm-ft",
        "head": True,
        "none": True,
    },
    "stylekqc-hybrid-head-morph": {
        "data": "stylekqc",
        "mode": "hybrid",
        "model": "e5",
        "head": True,
        "analyzer": "char+morph",
    },
    # e5-small fine-tuned on StyleKQC train (`qroute finetune-encoder`), then the same.
    "stylekqc-e5ft-hybrid-head-morph": {
        "data": "stylekqc",
        "mode": "hybrid",
        "model": "e5-ft",
        "head": True,
        "analyzer": "char+morph",
    },
    "stylekqc-lexical-head-morph": {
        "data": "stylekqc",
        "mode": "lexical",
        "model": None,
        "head": True,
        "analyzer": "char+morph",
    },
    "parakqc-lexical-head-morph": {
        "data": "parakqc",
        "mode": "lexical",
        "model": None,
        "head": True,
        "analyzer": "char+morph",
    },
    "parakqc-hybrid-head-morph": {
        "data": "parakqc",
        "mode": "hybrid",
        "model": "e5",
        "head": True,
        "analyzer": "char+morph",
    },
}


def _settings(
    config: dict[str, Any], model: str, prompt: str, where: Path, head_c: float
) -> Settings:
    return Settings(
        retrieval={"mode": config["mode"]},
        encoder={"model": model or "unused", "prompt": prompt, "batch_size": 64},
        lexical={"analyzer": config.get("analyzer", "char")},
        zero_shot={"method": "off"},
        router={"k": 10, "group_size": 3, "use_head": config["head"]},
        store={"location": str(where), "collection": "goals"},
        table={
            "on_duplicate": "skip",
            "on_conflicting_labels": "skip",
            "none_label": "oos" if config.get("none") else None,
        },
        index={"canary_per_label": 1, "head": config["head"], "head_c": head_c},
    )


async def _searched(
    settings: Settings,
    encoder: CachedEncoder | None,
    train: list[Example],
    queries: list[Example],
    where: Path,
) -> Precomputed:
    """``queries`` searched once in an index of ``train`` (built once under ``where``)."""
    from qroute_indexer import run_index

    done = where / "indexed.json"
    if not done.exists():
        where.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        await run_index(
            settings, write_table(where / "train.csv", train), encoder=encoder, progress=False
        )
        done.write_text(json.dumps({"seconds": round(time.perf_counter() - began, 1)}))
        if encoder is not None:
            encoder.save()
        print(f"  indexed {len(train)} rows in {time.perf_counter() - began:.0f} s", flush=True)
    store = EmbeddedStore(where, "goals")
    classifier = Classifier(settings, encoder, None, store)
    await classifier.refresh_index()
    try:
        began = time.perf_counter()
        pre = await precompute(classifier, queries, k_max=10, progress=False)
        print(f"  searched {len(queries)} rows in {time.perf_counter() - began:.0f} s", flush=True)
        if encoder is not None:
            encoder.save()
    finally:
        await classifier.close()
    return pre


def _every(rows: list[Example], limit: int) -> list[Example]:
    """Every n-th row, at most ``limit`` (0: all): for a quick check of the script."""
    return rows if not limit else rows[:: max(1, len(rows) // limit)][:limit]


async def run_goal(
    name: str,
    models: dict[str, tuple[str, str]],
    cache: Path,
    out: Path,
    head_c: float,
    limit: int = 0,
) -> dict[str, Any]:
    config = CONFIGS[name]
    data = _DATA / config["data"]
    lenient = TableSettings(on_duplicate="skip", on_conflicting_labels="skip")
    model, prompt = models.get(config["model"] or "", ("", ""))
    encoder = None
    if config["model"]:
        base = Settings(encoder={"model": model, "prompt": prompt, "batch_size": 64})
        inner = SentenceTransformerEncoder(base.encoder)
        digest = hashlib.sha256(inner.fingerprint.encode()).hexdigest()[:16]
        encoder = CachedEncoder(inner, cache / f"vectors-{digest}.npz")
    key = f"{name}-c{head_c:g}" + (f"-limit{limit}" if limit else "")
    if config["model"] in ("minilm-ft", "e5-ft"):
        # The fine-tuned model is a flag: an index built under another one must not be
        # reused (its vectors would not match this encoder's).
        key += "-" + hashlib.sha256(model.encode()).hexdigest()[:8]
    rows = _every(read_table(data / "train.jsonl", lenient), limit)
    oos_label = "oos" if config["data"] == "clinc150" else None
    objective = "oos" if oos_label else "accuracy"
    settings = _settings(config, model, prompt, cache / key, head_c)
    if (data / "dev.jsonl").exists():
        dev = _every(read_table(data / "dev.jsonl", lenient), limit // 4)
        train = [e for e in rows if config.get("none") or e.label != oos_label]
        pre = await _searched(settings, encoder, train, dev, cache / key)
        fold = _fold_of(dev, 5, by_group=False)
        evaluated = "dev"
    else:
        pre = None
        folds = []
        for k in range(5):
            held = [e for e in rows if int(e.extra["group"]) % 5 == k]
            train = [e for e in rows if int(e.extra["group"]) % 5 != k]
            where = cache / f"{key}-fold{k}"
            fold_settings = _settings(config, model, prompt, where, head_c)
            part = await _searched(fold_settings, encoder, train, held, where)
            if pre is None:
                pre = part
            else:
                pre.extend(part)
            # Inner folds by paraphrase set too (the group's next digit).
            folds += [(int(e.extra["group"]) // 5) % 5 for e in held]
        assert pre is not None
        fold = np.array(folds)
        evaluated = "5-fold CV by paraphrase set (group)"
    result = measure(key, pre, settings, fold, objective, 0.9, oos_label, out)
    result["evaluated_on"] = evaluated
    result["head_c"] = head_c
    return result
