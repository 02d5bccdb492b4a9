"""One emptiness rule for a query's text and a table row's text and label."""

from __future__ import annotations

from pathlib import Path

import pytest

from qroute.errors import TableError
from qroute.table import read_table
from qroute.types import is_blank


@pytest.mark.parametrize(
    "text", ["", " \t\n", "\x00", "\x00\x00", "\u200b", "\ufeff\u2028", "\x7f"]
)
def test_whitespace_control_and_format_characters_are_blank(text: str) -> None:
    assert is_blank(text)


@pytest.mark.parametrize("text", ["a", "\x00코스닥", "\u200b1", "·"])
def test_any_other_character_is_not_blank(text: str) -> None:
    assert not is_blank(text)


def test_a_table_row_of_only_control_characters_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"text": "코스닥 지수 알려줘", "label": "금융"}\n'
        '{"text": "\\u0000\\u0000", "label": "금융"}\n'
        '{"text": "날씨 알려줘", "label": "\\u200b"}\n',
        encoding="utf-8",
    )
    with pytest.raises(TableError) as info:
        read_table(path)
    assert info.value.problems == [
        f"{path}:2: text: empty [empty_text: error]",
        f"{path}:3: label: empty [missing_label: error]",
    ]
