"""The SHA-256 written beside each backup, in ``sha256sum`` format: ``sha256sum -c
FILE.sha256`` checks a copy with no LabLink at hand, and `lablink restore` refuses a copy whose
bytes are not the ones it was written for."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from lablink.errors import ChecksumMismatch

CHUNK = 1024 * 1024
SUFFIX = ".sha256"


def sidecar(file: Path) -> Path:
    return file.with_name(file.name + SUFFIX)


def digest(file: Path) -> str:
    sha = hashlib.sha256()
    with open(file, "rb") as stream:
        while chunk := stream.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def write(file: Path, sha256: str) -> Path:
    """``FILE.sha256`` naming the file by its base name (checked from its own directory);
    written whole or not at all."""
    target = sidecar(file)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(f"{sha256}  {file.name}\n")
    os.replace(partial, target)
    return target


def written(file: Path) -> str | None:
    """The digest ``FILE.sha256`` holds (None: there is none). A sidecar that is not
    ``sha256sum`` output counts as a mismatch: it says nothing the copy can be held to."""
    try:
        text = sidecar(file).read_text()
    except FileNotFoundError:
        return None
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    return first.lower()


def check(file: Path) -> str | None:
    """The copy's digest, checked against its sidecar (None: no sidecar to check against);
    ``ChecksumMismatch`` if they differ."""
    expected = written(file)
    if expected is None:
        return None
    actual = digest(file)
    if actual != expected:
        raise ChecksumMismatch(str(file), expected, actual)
    return actual


def remove(file: Path) -> None:
    for path in (file, sidecar(file)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
