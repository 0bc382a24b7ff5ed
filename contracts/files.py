"""Files written whole or not at all, and their digests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def unwritable_dir(path: str | Path) -> str | None:
    """Why no directory can be made or written at ``path`` (None: it can), found without leaving anything
    behind: the path or its nearest existing ancestor is not a directory, or a probe directory cannot be made
    there (tried, since ``os.access`` says yes to root everywhere, /proc included)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return "exists and is not a directory"
    ancestor = path.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    try:
        shutil.rmtree(tempfile.mkdtemp(prefix=".probe.", dir=ancestor))
    except OSError as exc:
        return f"cannot write under {ancestor} ({exc.strerror or exc})"
    return None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A sibling temporary path to write; renamed over ``path`` when the block succeeds, removed when it
    fails. A reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")
