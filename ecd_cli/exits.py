"""The ``ecd`` command's exit codes, sysexits(3)-style, so that a supervisor can tell a mistake
from an outage: systemd's ``RestartPreventExitStatus=64 78`` keeps a typo or a bad config file
from being restarted forever, while an unreachable cloud (69) is retried.

=====  ==================  ==========================================================================
code   name                when
=====  ==================  ==========================================================================
0      OK                  done
1      CHECK_FAILED        the run worked and found a mismatch (a check, a device agent's errors)
64     USAGE               a flag that is not one, a missing argument (argparse)
65     DATA                bad input data: a request, a manifest, a model, a profile, preferences
69     UNAVAILABLE         a peer cannot be reached, or refused for now (retrying later may work)
70     SOFTWARE            any other error ``ecd`` reports (a refusal by a peer, a precondition)
78     CONFIG              a bad option value or config file, a missing extra, a port in use
=====  ==================  ==========================================================================
"""

from __future__ import annotations

from ecd.errors import (ConfigError, EcdError, InputSpecError, IntegrityError, ManifestError, MissingExtraError, PeerError,
                        RequestError, SplitRangeError, UnavailableError, UnknownModelError)

OK, CHECK_FAILED, USAGE, DATA, UNAVAILABLE, SOFTWARE, CONFIG = 0, 1, 64, 65, 69, 70, 78


def exit_code(error: EcdError) -> int:
    """The exit code for an error the command reports in one line."""
    if isinstance(error, (ConfigError, MissingExtraError)):
        return CONFIG
    if isinstance(error, UnavailableError) or (isinstance(error, PeerError) and error.status == "UNAVAILABLE"):
        return UNAVAILABLE
    if isinstance(error, (RequestError, ManifestError, InputSpecError, SplitRangeError, IntegrityError, UnknownModelError)):
        return DATA
    return SOFTWARE
