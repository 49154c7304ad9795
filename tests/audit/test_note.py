"""Signed notes as C2SP and Go's golang.org/x/mod/sumdb/note write them: the reference
vector from Go's own tests, signed again byte for byte; the verifier key read and refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lablink.audit.note import Signer, Verifier, open_note, verify_note
from lablink.errors import CheckpointInvalid

# golang.org/x/mod/sumdb/note's note_test.go: the PeterNeumann key and note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def go_signer() -> Signer:
    return Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(GO_SKEY_SEED))


def test_the_go_reference_note_is_signed_and_read_byte_for_byte() -> None:
    signer = go_signer()
    assert signer.verifier.text() == GO_VKEY
    assert signer.sign_text(GO_TEXT) == GO_NOTE
    assert verify_note(GO_NOTE, Verifier.parse(GO_VKEY)) == GO_TEXT


def test_an_altered_text_is_a_bad_signature() -> None:
    with pytest.raises(CheckpointInvalid, match="bad signature by PeterNeumann"):
        verify_note(GO_NOTE.replace("cryptography", "cryptographY"), Verifier.parse(GO_VKEY))


def test_a_note_signed_by_another_key_is_refused() -> None:
    other = Signer("PeterNeumann", Ed25519PrivateKey.generate())
    forged = other.sign_text(GO_TEXT)
    with pytest.raises(CheckpointInvalid, match="not signed by PeterNeumann \\(c74f20a3\\)"):
        verify_note(forged, Verifier.parse(GO_VKEY))


@pytest.mark.parametrize(
    "mangled",
    [
        GO_VKEY[:-1],
        GO_VKEY.replace("c74f20a3", "c74f20a4"),
        GO_VKEY.replace("+", " ", 1),
        "PeterNeumann+c74f20a3",
        GO_VKEY.replace("ARpc", "AXpc"),
    ],
)
def test_a_mangled_verifier_key_is_refused(mangled: str) -> None:
    with pytest.raises(CheckpointInvalid):
        Verifier.parse(mangled)


def test_a_checkpoint_round_trips() -> None:
    signer = Signer("lablink/bench/0123abcd", Ed25519PrivateKey.generate())
    head = bytes(range(32))
    note = signer.sign("lablink/bench/0123abcd", 42, head)
    assert note.splitlines()[:3] == [
        "lablink/bench/0123abcd",
        "42",
        base64.b64encode(head).decode(),
    ]
    checkpoint = open_note(note, Verifier.parse(signer.verifier.text()))
    assert (checkpoint.origin, checkpoint.size, checkpoint.head) == (signer.name, 42, head)
