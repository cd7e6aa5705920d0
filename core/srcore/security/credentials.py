"""Integration source credentials at rest: sealed with the keyring (AES-256-GCM), bound to
their row, with the id of the sealing key stored beside each value.

Plaintext exists only in the admin request that writes it and in the SyncConfig stream of
the poller that runs the source; nothing here logs, and errors name the key id, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from srcore.domain.errors import FailedPrecondition
from srcore.domain.work import credentials_associated_data
from srcore.security.crypto import DecryptionError, Keyring


@dataclass(frozen=True, slots=True)
class Sealed:
    """Credentials as the store keeps them: sealed, with the id of the key that sealed them."""

    value: bytes
    key_id: str

    def __repr__(self) -> str:
        # Sealed bytes are safe, but there is no reason to print them either.
        return f"Sealed(key_id={self.key_id!r}, {len(self.value)} bytes)"


class CredentialVault:
    """Seals and opens source credentials with the replica's keyring."""

    def __init__(self, keyring: Callable[[], Keyring]) -> None:
        # A callable: the keyring is loaded when the server starts, after the vault is built.
        self._keyring = keyring

    def seal(self, tenant: str, item_id: str, credentials: Mapping[str, str]) -> Sealed:
        """Seal `credentials` with the newest key, bound to the item."""
        keyring = self._keyring()
        plaintext = json.dumps(dict(sorted(credentials.items())), separators=(",", ":")).encode()
        return Sealed(
            keyring.seal(plaintext, credentials_associated_data(tenant, item_id)), keyring.keys[0][0]
        )

    def open(self, tenant: str, item_id: str, sealed: Sealed) -> dict[str, str]:
        """The credentials; FailedPrecondition naming the key id when they cannot be opened."""
        try:
            plaintext = self._keyring().open(sealed.value, credentials_associated_data(tenant, item_id))
        except DecryptionError as exc:
            raise FailedPrecondition(f"credentials of source {item_id} cannot be opened: {exc}") from None
        data = json.loads(plaintext)
        return {str(k): str(v) for k, v in data.items()}

    def reseal(self, tenant: str, item_id: str, sealed: Sealed) -> Sealed:
        """The same credentials sealed with the newest key."""
        keyring = self._keyring()
        associated = credentials_associated_data(tenant, item_id)
        try:
            plaintext = keyring.open(sealed.value, associated)
        except DecryptionError as exc:
            raise FailedPrecondition(f"credentials of source {item_id} cannot be opened: {exc}") from None
        return Sealed(keyring.seal(plaintext, associated), keyring.keys[0][0])

    @property
    def newest_key(self) -> str:
        """The id of the key new values are sealed with."""
        return self._keyring().keys[0][0]
