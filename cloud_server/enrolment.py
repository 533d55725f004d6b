"""Enrolling a browser device (issue 33): one-time codes the operator issues, and the enrolment an
edge node relays from a page — the code redeemed, the page's public key bound to a new device.

:class:`EnrolmentCodes` is the one writer of the codes. They are kept in this replica's memory, not
in the registry: a code lives minutes, is typed or scanned at once, and a code lost with a restart
is simply issued again. With several cloud replicas, a code is good on the replica whose operator
view issued it (docs/how-to/phone-browser.md says how to point the edges at it).
"""

from __future__ import annotations

import enum
import secrets
import threading
from dataclasses import dataclass, replace

from cloud_server.devices import Devices
from ecd import devicekey
from ecd.clock import SYSTEM_CLOCK, Clock
from ecd.errors import AuthenticationError, RequestError
from ecd.limits import printable
from ecd.types import Assignment, Enrolment

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a screen and typed on a phone
CODE_CHARS = 10  # ~49 bits: unguessable within a code's minutes at the registrations rate limit
MAX_TTL_S = 24 * 3600.0


class CodeState(enum.Enum):
    ISSUED = "issued"
    USED = "used"


@dataclass
class _Code:
    expires: float  # unix seconds
    state: CodeState = CodeState.ISSUED


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires: float  # unix seconds


class EnrolmentCodes:
    """One-time enrolment codes, each good for ``ttl_s`` seconds and for one enrolment."""

    def __init__(self, ttl_s: float = 600.0, clock: Clock = SYSTEM_CLOCK):
        self.ttl_s = ttl_s
        self.clock = clock
        self._codes: dict[str, _Code] = {}
        self._lock = threading.Lock()  # issued from the operator view's thread, redeemed from the servicer's

    def issue(self, ttl_s: float | None = None) -> IssuedCode:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= MAX_TTL_S:
            raise RequestError(f"ttl_s: expected more than 0 and at most {MAX_TTL_S:g} seconds, got {ttl}")
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
        now = self.clock.time()
        with self._lock:
            self._codes = {c: v for c, v in self._codes.items() if v.expires > now}  # the expired ones go
            self._codes[code] = _Code(now + ttl)
        return IssuedCode(code, now + ttl)

    def redeem(self, code: str) -> None:
        """Use ``code`` up; AuthenticationError naming ``code`` when it is unknown, expired or used."""
        with self._lock:
            entry = self._codes.get(code.strip().upper())
            if entry is None:
                raise AuthenticationError(f"code: unknown enrolment code {printable(code[:16])!r}; ask the operator for one")
            if entry.state is CodeState.USED:
                raise AuthenticationError("code: this enrolment code was already used; ask the operator for a new one")
            if self.clock.time() >= entry.expires:
                raise AuthenticationError("code: this enrolment code has expired; ask the operator for a new one")
            entry.state = CodeState.USED


def enrol(codes: EnrolmentCodes, devices: Devices, req: Enrolment) -> Assignment:
    """A browser device joins: its key checked, then registered like any device, with the key's
    holder name (:mod:`ecd.devicekey`), a phone's profile unless it names one, and the split the
    utility recommends for its weights unless it pins one (a page does not run the utility). The code is used
    up last, once the rest is found good: a mistyped weight does not cost the user their code."""
    devicekey.check_public_key(req.public_key)
    reg = replace(req.registration, profile=req.registration.profile or devicekey.BROWSER_PROFILE)
    return devices.register(reg, devicekey.holder_of(req.public_key), admit=lambda: codes.redeem(req.code))
