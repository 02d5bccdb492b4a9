"""The documentation names what the code has: every setting has a row in
docs/configuration.md, and no row names a setting that does not exist."""

from __future__ import annotations

import html
import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from qroute.config import RESTART_ONLY, RESTART_ONLY_SERVER, Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
# A row of the key table: "| `section.key` | default | meaning | reload |".
ROW = re.compile(r"^\|\s*`([a-z_]+(?:\.[a-z_]+)+)`\s*\|(.*)\|\s*$")


def _models(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models inside a field's annotation (``X``, ``X | None``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def setting_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf field of ``model`` as a dotted key, recursing into nested sections."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        nested = _models(field.annotation)
        if nested:
            for sub in nested:
                keys |= setting_keys(sub, f"{dotted}.")
        else:
            keys.add(dotted)
    return keys


def documented_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            key, rest = match.groups()
            assert key not in rows, f"docs/configuration.md: `{key}` has two rows"
            rows[key] = [cell.strip() for cell in rest.split("|")]
    return rows


def test_walk_finds_nested_and_optional_sections() -> None:
    keys = setting_keys(Settings)
    assert {"router.k", "store.api_key", "lexical.dimensions", "tuned.figures"} <= keys
    assert "router" not in keys and "tuned" not in keys


def test_every_setting_has_a_row() -> None:
    missing = sorted(setting_keys(Settings) - documented_rows().keys())
    assert not missing, (
        "docs/configuration.md lacks a row for "
        + ", ".join(missing)
        + ": add '| `section.key` | default | meaning | reload |' to its key table"
    )


def test_no_row_names_a_missing_setting() -> None:
    unknown = sorted(documented_rows().keys() - setting_keys(Settings))
    assert not unknown, f"docs/configuration.md documents settings that do not exist: {unknown}"


def test_restart_only_sections_say_so() -> None:
    rows = documented_rows()
    wrong = sorted(
        key
        for key, cells in rows.items()
        if (
            key.split(".")[0] in RESTART_ONLY
            or key == "retrieval.mode"
            or (key.startswith("server.") and key.split(".")[1] in RESTART_ONLY_SERVER)
        )
        and cells[-1] != "restart"
    )
    assert not wrong, f"docs/configuration.md: these need a restart (qroute/config.py): {wrong}"


# [text](target) in Markdown, outside code; images included.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_links_between_pages_resolve() -> None:
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *(ROOT / "bench").glob("*.md"),
    ]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_figures_are_rendered_from_their_sources() -> None:
    """Every text line of a figure's Graphviz source is in its SVG: an edited .dot that
    was not re-rendered (`make docs-figures`) fails here, without Graphviz installed."""
    sources = sorted((ROOT / "docs" / "figures").glob("*.dot"))
    assert sources, "docs/figures holds no Graphviz source"
    for source in sources:
        svg = source.with_suffix(".svg")
        assert svg.exists(), f"{svg.relative_to(ROOT)} is missing: run `make docs-figures`"
        rendered = {
            re.sub(r"\s+", " ", html.unescape(text)).strip()
            for text in re.findall(r"<text[^>]*>(.*?)</text>", svg.read_text(encoding="utf-8"))
        }
        for label in re.findall(r'label="((?:[^"\\]|\\.)*)"', source.read_text(encoding="utf-8")):
            for line in label.split("\\n"):
                line = re.sub(r"\s+", " ", line).strip()
                assert line in rendered, (
                    f"{svg.relative_to(ROOT)} lacks {line!r} from {source.name}: "
                    "run `make docs-figures` and commit the SVG"
                )
