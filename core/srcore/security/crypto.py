"""Secrets at rest: AES-256-GCM with key ids, so keys can be rotated without downtime.

Keys come from the `secret_keys` setting (SRCORE_SECRET_KEYS): a comma-separated list of
``<key id>:<base64 of 32 bytes>``. The first key encrypts; every listed key decrypts. To rotate,
put a new key first and keep the old one listed until nothing encrypted with it remains
(docs/security.md). Without configured keys the embedded default keeps one generated key in
``<data dir>/secret-key``, readable by the owner only.

A sealed value is ``0x01 | len(key id) | key id | 12-byte nonce | ciphertext and tag``. Callers
pass associated data naming the record (e.g. ``b"package:<id>"``), so a sealed value copied to
another row does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from srcore.domain.errors import InvalidArgument

KEY_BYTES = 32
NONCE_BYTES = 12
_VERSION = 1
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
KEY_FILE_NAME = "secret-key"


class DecryptionError(Exception):
    """A sealed value cannot be opened: unknown key id, wrong key, tampered or misplaced."""


@dataclass(frozen=True, slots=True)
class Keyring:
    """Named AES-256 keys; the first one seals."""

    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidArgument("secret_keys", "at least one key is required")
        ids = [key_id for key_id, _ in self.keys]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("secret_keys", "key ids must be unique")

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt and authenticate `plaintext`, bound to `associated_data`."""
        key_id, key = self.keys[0]
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = AESGCM(key).encrypt(nonce, plaintext, associated_data)
        encoded_id = key_id.encode()
        return bytes([_VERSION, len(encoded_id)]) + encoded_id + nonce + body

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        """Decrypt a value `seal` produced with the same associated data."""
        if len(sealed) < 2 or sealed[0] != _VERSION:
            raise DecryptionError("not a sealed value of a known version")
        id_end = 2 + sealed[1]
        key_id = sealed[2:id_end].decode(errors="replace")
        key = dict(self.keys).get(key_id)
        if key is None:
            raise DecryptionError(f"sealed with key {key_id!r}, which is not configured")
        nonce, body = sealed[id_end : id_end + NONCE_BYTES], sealed[id_end + NONCE_BYTES :]
        try:
            return AESGCM(key).decrypt(nonce, body, associated_data)
        except InvalidTag:
            raise DecryptionError(f"value sealed with key {key_id!r} failed authentication") from None


def parse_key(text: str) -> tuple[str, bytes]:
    """One ``<key id>:<base64>`` entry; InvalidArgument naming the key id, never the key."""
    key_id, colon, encoded = text.strip().partition(":")
    if not colon or not _KEY_ID.fullmatch(key_id):
        raise InvalidArgument("secret_keys", "each key must read <key id>:<base64 of 32 bytes>")
    try:
        key = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error:
        raise InvalidArgument("secret_keys", f"key {key_id!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise InvalidArgument("secret_keys", f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
    return key_id, key


def keyring(entries: Sequence[str]) -> Keyring:
    """A keyring from the `secret_keys` setting."""
    return Keyring(tuple(parse_key(entry) for entry in entries))


def new_key_entry(key_id: str) -> str:
    """A fresh ``<key id>:<base64>`` entry, e.g. for `SRCORE_SECRET_KEYS`."""
    if not _KEY_ID.fullmatch(key_id):
        raise InvalidArgument("key_id", "must be 1-32 characters of [A-Za-z0-9._-]")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def load_or_create_key_file(data_dir: Path) -> Keyring:
    """The embedded default's keyring: one key kept in ``<data dir>/secret-key`` (mode 0600).

    Written to a private temporary file and hard-linked into place, which fails when the file
    exists: two processes starting together agree on one key and never read a partial file.
    """
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{KEY_FILE_NAME}.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(new_key_entry("local-1") + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return keyring([path.read_text().strip()])
