"""server.auth.tokens_file as editors write it: a UTF-8 byte order mark (Windows
Notepad, PowerShell 5's ``Set-Content -Encoding utf8``) is not part of the first token."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from qroute_server.auth import TokenFile, parse_tokens

from qroute.errors import ConfigError

BOM = "\ufeff"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_byte_order_mark_is_not_part_of_the_first_token(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "tokens"
    path.write_bytes(f"{BOM}first-token{newline}second-token{newline}".encode())
    tokens = TokenFile(path)
    tokens.load()
    assert tokens.accepts("first-token")
    assert tokens.accepts("second-token")


def test_a_byte_order_mark_before_a_digest_or_a_comment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    digest = hashlib.sha256(b"hashed-token").hexdigest()
    path = tmp_path / "tokens"
    path.write_bytes(f"{BOM}sha256:{digest}\n".encode())
    tokens = TokenFile(path)
    tokens.load()
    assert tokens.accepts("hashed-token")
    # A file of comments only holds no token, BOM or not (and says so).
    path.write_bytes(f"{BOM}# nobody yet\n".encode())
    with caplog.at_level(logging.WARNING, logger="qroute_server.auth"):
        TokenFile(path).load()
    assert "holds no token" in caplog.text
    assert parse_tokens("# nobody yet\n", "tokens") == frozenset()


def test_text_that_is_not_utf8_still_ends_the_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_bytes(b"\xff\xfe t\x00o\x00k\x00")  # UTF-16, not UTF-8
    with pytest.raises(ConfigError, match=r"server\.auth\.tokens_file .* is not UTF-8"):
        TokenFile(path).load()
