"""Callers' numbers kept for calling back only: sealed with AES-GCM under a key of their own.

A caller's storage key is a keyed hash (:mod:`memory.privacy.identity`) precisely so that the
number cannot be read back. Calling a caller back needs it, so the number is also kept beside
their memory, sealed: AES-256-GCM under the *number key*, bound (as associated data) to the
caller it belongs to, so a sealed number copied under another caller's keys does not open.

The number key lives in its own file (``RAPPORT_NUMBER_KEY_FILE``, by default beside the
generated pepper, ``$XDG_CONFIG_HOME/rapport/number-key``), never in the data folder: a copy of
the data alone reveals no number. The file holds one key per line, 64 hex characters, the first
one sealing and every one opening, so a key is rotated by putting a new line first (see the
README); a sealed number names the key that sealed it (a 4-byte key id). A number whose key is
no longer in the file does not open: that caller cannot be called back until they call again.

Nothing here logs a number; a sealed number is opened only where a call back is placed or a
person asked to see it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from memory.errors import ConfigurationError
from memory.privacy.identity import config_file, generated_secret

#: Name of the generated number key file (beside the pepper).
NUMBER_KEY_FILENAME = "number-key"
#: Bytes of one number key (AES-256).
KEY_BYTES = 32

_FORMAT = b"n1"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12


def default_number_key_file() -> Path:
    """Where the generated number key lives by default: beside the pepper, outside the data."""
    return config_file(NUMBER_KEY_FILENAME)


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"rapport number key id\x1f" + key).digest()[:_KEY_ID_BYTES]


class NumberVault:
    """Seals and opens phone numbers with the number keys.

    Args:
        keys: The number keys, 32 bytes each; the first seals, all open.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(key) != KEY_BYTES for key in keys):
            raise ValueError(f"number keys are {KEY_BYTES} bytes, at least one")
        self._sealing = keys[0]
        self._by_id = {_key_id(key): AESGCM(key) for key in reversed(keys)}

    def seal(self, e164: str, *, bound_to: str) -> bytes:
        """Encrypt a number for storage.

        Args:
            e164: The number, normalised (``+14155550123``).
            bound_to: What the sealed number belongs to (a caller's hash tag); opening it
                needs the same text.

        Returns:
            ``n1`` + key id + nonce + ciphertext with its tag: never the number itself.
        """
        key_id = _key_id(self._sealing)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._by_id[key_id].encrypt(nonce, e164.encode(), bound_to.encode())
        return _FORMAT + key_id + nonce + sealed

    def open(self, blob: bytes, *, bound_to: str) -> str | None:
        """Decrypt a sealed number; None when it cannot be opened.

        That is: not a sealed number, sealed by a key no longer in the file, bound to something
        else, or altered.
        """
        head = len(_FORMAT)
        if not blob.startswith(_FORMAT) or len(blob) <= head + _KEY_ID_BYTES + _NONCE_BYTES:
            return None
        key_id = blob[head : head + _KEY_ID_BYTES]
        nonce = blob[head + _KEY_ID_BYTES : head + _KEY_ID_BYTES + _NONCE_BYTES]
        cipher = self._by_id.get(key_id)
        if cipher is None:
            return None
        sealed = blob[head + _KEY_ID_BYTES + _NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, sealed, bound_to.encode()).decode()
        except (InvalidTag, UnicodeDecodeError):
            return None


def load_number_vault(path: Path | None = None) -> NumberVault:
    """The vault of the number key file, generated (one key, mode 0600) when absent.

    Args:
        path: ``RAPPORT_NUMBER_KEY_FILE`` (None: :func:`default_number_key_file`).

    Raises:
        ConfigurationError: The file cannot be read or written, or a line is not a key.
    """
    path = (path or default_number_key_file()).expanduser()
    try:
        generated_secret(path)  # a key of KEY_BYTES, on first use
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigurationError(
            "RAPPORT_NUMBER_KEY_FILE cannot be read or written (the callers' number key)"
        ) from err
    keys = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigurationError(
                f"RAPPORT_NUMBER_KEY_FILE: every line must be a key of {2 * KEY_BYTES} hex "
                "characters (the first seals, all open)"
            )
        keys.append(key)
    if not keys:
        raise ConfigurationError("RAPPORT_NUMBER_KEY_FILE holds no key; restore it from backup")
    return NumberVault(keys)
