"""Bearer token format: generation, parsing and hashing. No I/O.

A token reads ``<kind>_<id>_<secret>``:

- ``kind`` is ``srt`` for an API token and ``srd`` for a package's single-use download token,
  so a token pasted in the wrong place is recognised as such;
- ``id`` is 12 characters of lower-case base32 (60 bits), public, the key the server looks the
  token up by and the name it appears under in listings and the audit log;
- ``secret`` is 32 random bytes in unpadded base64url (43 characters).

The server stores only the SHA-256 of the whole token. A salted slow hash (bcrypt, argon2)
protects low-entropy passwords; with 256 random bits nothing is gained by it, and a fast hash
keeps verification off the hot path's CPU budget.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from srcore.domain.errors import Unauthenticated

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
ID_LENGTH = 12
_SECRET_BYTES = 32
_TOKEN = re.compile(r"(srt|srd)_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
_ID = re.compile(r"[a-z2-7]{12}")


class TokenKind(enum.StrEnum):
    """What a token is for; the value is its textual prefix."""

    API = "srt"
    DOWNLOAD = "srd"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly generated token: show `secret` once, store `token_id` and `digest`."""

    kind: TokenKind
    token_id: str
    secret: str
    digest: str


@dataclass(frozen=True, slots=True)
class PresentedToken:
    """A token as a caller presented it, well-formed but not yet verified."""

    kind: TokenKind
    token_id: str
    digest: str


def generate(kind: TokenKind) -> NewToken:
    """A new random token of `kind`."""
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
    body = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    secret = f"{kind.value}_{token_id}_{body}"
    return NewToken(kind, token_id, secret, digest(secret))


def parse(text: str) -> PresentedToken:
    """Recognise a presented token; Unauthenticated (never echoing it) when it is malformed."""
    match = _TOKEN.fullmatch(text)
    if match is None:
        raise Unauthenticated("the bearer token is not a ServiceRadar token")
    return PresentedToken(TokenKind(match.group(1)), match.group(2), digest(text))


def digest(secret: str) -> str:
    """SHA-256 of a token, lower-case hex: what the store keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(presented: str, stored: str) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the stored hash."""
    return hmac.compare_digest(presented.encode(), stored.encode())


def valid_id(token_id: str) -> bool:
    """Whether `token_id` has the shape of a token id (for request validation)."""
    return _ID.fullmatch(token_id) is not None
