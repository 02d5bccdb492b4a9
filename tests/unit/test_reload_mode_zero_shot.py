"""A reload whose file changes the restart-only ``retrieval.mode`` keeps the running mode;
the zero-shot method derived from the mode must follow the running mode too, not the
file's new one (which only applies at the next restart)."""

from __future__ import annotations

from qroute.config import Settings


def test_a_kept_lexical_mode_keeps_zero_shot_off() -> None:
    # Running lexical (zero-shot off by default there); the file now says hybrid.
    running = Settings(retrieval={"mode": "lexical"})
    new, kept = running.reloaded(Settings(retrieval={"mode": "hybrid"}))
    assert new.retrieval.mode == "lexical"
    assert new.zero_shot.method == "off"  # not the NLI model, switched on unasked
    assert kept == ["retrieval.mode"]


def test_a_kept_dense_mode_keeps_its_nli_fallback() -> None:
    running = Settings()  # dense, zero_shot.method nli
    new, kept = running.reloaded(Settings(retrieval={"mode": "lexical"}))
    assert new.retrieval.mode == "dense"
    assert new.zero_shot.method == "nli"  # not silently off
    assert kept == ["retrieval.mode"]


def test_a_chosen_method_still_reloads_with_the_mode_kept() -> None:
    running = Settings()
    chosen = Settings(retrieval={"mode": "lexical"}, zero_shot={"method": "off"})
    assert running.reloaded(chosen)[0].zero_shot.method == "off"
    running = Settings(retrieval={"mode": "lexical"})
    chosen = Settings(retrieval={"mode": "hybrid"}, zero_shot={"method": "nli"})
    assert running.reloaded(chosen)[0].zero_shot.method == "nli"


def test_embedding_waits_for_the_mode_that_loads_the_encoder() -> None:
    # lexical + embedding is refused at start; a reload must not run it either.
    running = Settings(retrieval={"mode": "lexical"})
    new, kept = running.reloaded(
        Settings(retrieval={"mode": "hybrid"}, zero_shot={"method": "embedding"})
    )
    assert (new.retrieval.mode, new.zero_shot.method) == ("lexical", "off")
    assert kept == ["retrieval.mode", "zero_shot.method"]


def test_an_unchanged_mode_reloads_the_zero_shot_section_as_before() -> None:
    running = Settings(retrieval={"mode": "lexical"})
    new, kept = running.reloaded(
        Settings(retrieval={"mode": "lexical"}, zero_shot={"threshold": 0.3})
    )
    assert (new.zero_shot.method, new.zero_shot.threshold, kept) == ("off", 0.3, [])
