"""A browser device's key: the ECDSA P-256 key pair a page makes with WebCrypto (non-extractable,
so the private half never leaves the browser) stands in for the client certificate a browser cannot
be given.

One name per key: its *holder* is ``browser:`` + the first 32 hex digits of sha256 over its
SubjectPublicKeyInfo. The cloud stores it as the device's holder at enrolment (the same column a
device certificate's name goes in), and an edge node passes it as ``GetAssignmentRequest.holder``
once the page has signed the session's challenge with the key: a token shown with another key (or
none) is then refused by the cloud as issued to another holder.

Needs ``cryptography`` (the ``browser`` extra on an edge node, ``cloud`` on the cloud): imported
when a key is first checked, so a runtime install without it runs everything else.
"""

from __future__ import annotations

import hashlib
import secrets

from ecd.errors import AuthenticationError, MissingExtraError, RequestError

HOLDER_PREFIX = "browser:"
CHALLENGE_BYTES = 32
MAX_KEY_BYTES = 200  # a P-256 SPKI is 91 bytes
BROWSER_PROFILE = "phone_midrange"  # the shipped profile a browser device's split is decided with


def holder_of(spki: bytes) -> str:
    """The holder name bound to this public key (see the module's docstring)."""
    return HOLDER_PREFIX + hashlib.sha256(spki).hexdigest()[:32]


def challenge() -> bytes:
    """A fresh random challenge for one session: a signature over it proves the key, now."""
    return secrets.token_bytes(CHALLENGE_BYTES)


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    except ImportError:
        raise MissingExtraError("public_key: checking a browser device's key needs cryptography: "
                                "pip install 'ecd-runtime[browser]'") from None
    return InvalidSignature, hashes, serialization, ec, encode_dss_signature


def check_public_key(spki: bytes):
    """The ECDSA P-256 public key in ``spki`` (DER SubjectPublicKeyInfo), or RequestError naming
    ``public_key``."""
    _, _, serialization, ec, _ = _crypto()
    if not spki or len(spki) > MAX_KEY_BYTES:
        raise RequestError(f"public_key: expected a P-256 SubjectPublicKeyInfo of at most {MAX_KEY_BYTES} bytes, got {len(spki)}")
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, TypeError):
        raise RequestError("public_key: not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise RequestError("public_key: expected an ECDSA P-256 key")
    return key


def verify(spki: bytes, message: bytes, signature: bytes) -> None:
    """Check a WebCrypto ECDSA P-256 / SHA-256 signature over ``message`` (IEEE P1363: r || s, 64
    bytes, as ``crypto.subtle.sign`` returns it); AuthenticationError naming ``signature`` if not."""
    invalid, hashes, _, ec, encode_dss_signature = _crypto()
    key = check_public_key(spki)
    if len(signature) != 64:
        raise AuthenticationError(f"signature: expected 64 bytes (r || s), got {len(signature)}")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except invalid:
        raise AuthenticationError("signature: the session's challenge was not signed by this device's key") from None
