"""The checkpoint signing key of a data directory: Ed25519, made on the first start.

``DATA_DIR/audit/checkpoint.key`` holds the private key (PKCS#8 PEM, mode 0600, the folder
0700); ``DATA_DIR/audit/origin`` the log's origin, the name checkpoints carry and the key
signs under: ``lablink/<host>/<8 hex>``, unique per data directory and readable by a person.
`lablink audit pubkey` prints the public half as a verifier key (lablink/audit/note.py): that
line is all an auditor needs besides an export of the log.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from lablink.audit.note import Signer
from lablink.bus.credentials import write_private
from lablink.errors import CheckpointInvalid, SigningKeyMissing
from lablink.ids import random_hex

FOLDER = "audit"
KEY_FILE = "checkpoint.key"
ORIGIN_FILE = "origin"
# A key name may not hold spaces or "+" (the verifier key's separator).
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def folder(data_dir: Path) -> Path:
    return data_dir / FOLDER


def new_origin() -> str:
    host = _UNSAFE.sub("-", socket.gethostname())[:48] or "host"
    return f"lablink/{host}/{random_hex(32)}"


def ensure_signer(data_dir: Path) -> Signer:
    """The data directory's signer, made (key and origin) if it has none yet."""
    try:
        return load_signer(data_dir)
    except SigningKeyMissing:
        pass
    where = folder(data_dir)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    where.chmod(0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    origin = new_origin()
    # The origin first: a key file without its origin would name no log.
    write_private(where / ORIGIN_FILE, origin + "\n")
    write_private(where / KEY_FILE, pem)
    return Signer(origin, key)


def load_signer(data_dir: Path) -> Signer:
    where = folder(data_dir)
    key_path, origin_path = where / KEY_FILE, where / ORIGIN_FILE
    try:
        pem = key_path.read_bytes()
        origin = origin_path.read_text().strip()
    except FileNotFoundError:
        raise SigningKeyMissing(str(key_path)) from None
    key = load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointInvalid("signing key", f"{key_path} is not an Ed25519 private key")
    if not origin or _UNSAFE.sub("", origin.replace("/", "")) != origin.replace("/", ""):
        raise CheckpointInvalid("origin", f"{origin_path} holds no usable origin: {origin!r}")
    return Signer(origin, key)
