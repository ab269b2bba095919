"""SHA-256 of files, read a block at a time: what stores and the model cache check.

Internal: nothing here is part of the public API, and names may change.

Example::

    import tempfile
    from pathlib import Path
    from tl_dynamics._digest import file_digest
    path = Path(tempfile.mkdtemp()) / "numbers.txt"
    path.write_text("1 2 3")
    size, sha256 = file_digest([path])        # (5, 'a8e5...'): size in bytes, hex digest
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["HASH_BLOCK", "file_digest"]

HASH_BLOCK = 2**20  # bytes read at a time: memory stays flat whatever the file's size


def file_digest(paths: Iterable[Path]) -> tuple[int, str]:
    """``(size in bytes, SHA-256 hex)`` of the concatenated bytes of ``paths``, in order."""
    digest, size = hashlib.sha256(), 0
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
                size += len(block)
    return size, digest.hexdigest()
