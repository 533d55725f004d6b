"""ecd.packing's settings: what cannot work is refused naming the option, as the agent and the edge
node start (a NaN linger would otherwise compare false everywhere and never end a message)."""

from __future__ import annotations

import math

import pytest

from ecd.errors import ConfigError
from ecd.limits import MAX_FRAMES_PER_MESSAGE
from ecd.packing import Packing


@pytest.mark.parametrize("settings, message", [
    ({"linger_s": math.nan}, r"^linger_ms: expected 0\.\.1000, got nan$"),
    ({"linger_s": -0.001}, r"^linger_ms: expected 0\.\.1000, got -1$"),
    ({"linger_s": 2.0}, r"^linger_ms: expected 0\.\.1000, got 2000$"),
    ({"max_frames": 0}, rf"^message_frames: expected 1\.\.{MAX_FRAMES_PER_MESSAGE} "),
    ({"max_frames": MAX_FRAMES_PER_MESSAGE + 1}, rf"^message_frames: expected 1\.\.{MAX_FRAMES_PER_MESSAGE} "),
    ({"max_bytes": 0}, r"^message_bytes: expected at least 1, got 0$"),
])
def test_settings_that_cannot_work_are_refused_naming_the_option(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Packing(**settings).check()


def test_one_frame_per_message_is_off_and_the_receivers_limit_is_allowed() -> None:
    assert not Packing(max_frames=1).check().on
    assert Packing(max_frames=MAX_FRAMES_PER_MESSAGE).check().on
