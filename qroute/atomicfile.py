"""Writing a file whole or not at all: the one way qroute replaces a file that another
process reads while it runs (the published pointer, a version's metadata, the config
file the router hot-reloads)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["replace_file"]


def replace_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: written to a temporary file beside it, flushed to
    disk, then renamed over it, and the rename itself made durable. A reader sees the old
    content or the new, never a truncated file, even after a crash or ``kill -9``. A
    symlink keeps its link (the file it points to is replaced) and an existing file keeps
    its permission bits. Raises OSError (PermissionError where the folder does not let
    us create the temporary file). A path that is no regular file (``/dev/stdout``, a
    pipe) is written to, not renamed over: that would replace the device."""
    if path.exists() and not path.is_file():
        path.write_text(text, encoding="utf-8")
        return
    target = path.resolve() if path.is_symlink() else path
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
