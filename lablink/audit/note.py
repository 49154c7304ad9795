"""Checkpoints as C2SP signed notes, signed with Ed25519: text that standard tools read.

A checkpoint (c2sp.org/tlog-checkpoint) is three lines: the log's origin, its size (the
number of events it covers, positions 1..size) and its head hash (base64), here the hash
chain's value at position ``size`` (lablink/eventstore/chain.py), not a Merkle tree root: a
transparency log's inclusion proofs do not apply, the signature and the head do. The signed
note (c2sp.org/signed-note) appends a blank line and one signature line per signer:
``— <key name> <base64(key id ‖ Ed25519 signature of the text)>``, where the key id is the
first 4 bytes of SHA-256(key name ‖ "\\n" ‖ 0x01 ‖ public key). The verifier key is
``<name>+<key id, hex>+<base64(0x01 ‖ public key)>``, the form Go's
``golang.org/x/mod/sumdb/note`` reads. LabLink names its key after the log's origin.

Pure apart from the ``cryptography`` package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lablink.errors import CheckpointInvalid

ALG_ED25519 = b"\x01"
DASH = "\u2014"  # the em dash that opens a signature line


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointInvalid(what, f"not base64: {text!r}") from exc


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public).digest()[:4]


def public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A public key and the name it signs under."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def text(self) -> str:
        """The verifier key line, ``name+keyid+base64(alg ‖ key)``."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(ALG_ED25519 + self.public)}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        # The key's base64 may hold "+" itself: the name and the id end at the first two.
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not parts[0]:
            raise CheckpointInvalid("public key", f"not a verifier key (name+id+key): {text!r}")
        name, id_hex, encoded = parts
        raw = _unb64(encoded, "public key")
        if len(raw) != 33 or raw[:1] != ALG_ED25519:
            raise CheckpointInvalid("public key", "not an Ed25519 verifier key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != id_hex.lower():
            raise CheckpointInvalid(
                "public key", f"key id {id_hex} does not match the key ({verifier.key_id.hex()})"
            )
        return verifier


@dataclass(frozen=True)
class Signer:
    name: str
    private: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, public_bytes(self.private.public_key()))

    def sign(self, origin: str, size: int, head: bytes) -> str:
        """The signed note of the checkpoint (origin, size, head)."""
        return self.sign_text(checkpoint_body(origin, size, head))

    def sign_text(self, text: str) -> str:
        """``text`` (ending in a newline) as a note signed by this key."""
        signature = self.private.sign(text.encode())
        return f"{text}\n{DASH} {self.name} {_b64(self.verifier.key_id + signature)}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    head: bytes
    note: str


def checkpoint_body(origin: str, size: int, head: bytes) -> str:
    return f"{origin}\n{size}\n{_b64(head)}\n"


def verify_note(note: str, verifier: Verifier) -> str:
    """The text of a signed note, once a signature by ``verifier`` checks out;
    ``CheckpointInvalid`` names what is wrong otherwise (malformed, another key, a bad
    signature)."""
    text, sep, signatures = note.partition("\n\n")
    if not sep or not text:
        raise CheckpointInvalid("checkpoint", "not a signed note (no blank line before signatures)")
    text += "\n"
    found: list[str] = []
    for line in signatures.split("\n"):
        if not line:
            continue
        prefix, _, rest = line.partition(" ")
        name, _, encoded = rest.partition(" ")
        if prefix != DASH or not encoded:
            raise CheckpointInvalid("checkpoint", f"not a signature line: {line!r}")
        raw = _unb64(encoded, "signature")
        if len(raw) != 4 + 64:
            raise CheckpointInvalid("signature", f"{len(raw)} bytes, not an Ed25519 signature")
        found.append(f"{name} ({raw[:4].hex()})")
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public).verify(raw[4:], text.encode())
        except InvalidSignature as exc:
            raise CheckpointInvalid(
                "signature", f"bad signature by {verifier.name} ({verifier.key_id.hex()})"
            ) from exc
        return text
    raise CheckpointInvalid(
        "signature",
        f"not signed by {verifier.name} ({verifier.key_id.hex()}): signed by "
        + (", ".join(found) or "nobody"),
    )


def open_note(note: str, verifier: Verifier) -> Checkpoint:
    """The checkpoint a note signed by ``verifier`` holds (``CheckpointInvalid`` otherwise)."""
    lines = verify_note(note, verifier).split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointInvalid("checkpoint", "fewer than three lines (origin, size, hash)")
    origin, size_text, head_text = lines[:3]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointInvalid("checkpoint", f"size is not a decimal number: {size_text!r}")
    head = _unb64(head_text, "checkpoint hash")
    if len(head) != 32:
        raise CheckpointInvalid("checkpoint hash", f"{len(head)} bytes, not 32")
    return Checkpoint(origin=origin, size=int(size_text), head=head, note=note)
