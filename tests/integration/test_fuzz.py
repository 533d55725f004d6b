"""The protocol fuzzed (bounded, for CI): every RPC of the three services with drawn requests,
against live services in their own processes; the invariants are in ``tests/fuzzing.py``. The
longer run is ``benchmarks/fuzz.py``. And the tensor codec, which every frame passes through."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecd import codec
from ecd.errors import LimitError, RequestError
from ecd.types import Encoding, Tensor
from fuzzing import Tally, check_case, methods, new_cluster, request_strategy

METHODS = methods()
EXAMPLES = 150


@pytest.mark.long
def test_every_rpc_survives_drawn_requests() -> None:
    """About 150 drawn calls, an equal share for every method, each checked against the invariants;
    then a canary frame is answered and the services' memory is bounded."""
    cluster, tmp = new_cluster()
    tally = Tally()
    templates = cluster.templates()
    drawn: set[str] = set()
    per_method = -(-EXAMPLES // len(METHODS))  # every method gets its share (drawing the method left some out by chance)

    def calls_of(method):
        @settings(max_examples=per_method, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(data=st.data())
        def one_call(data) -> None:
            drawn.add(method.path)
            strategy = request_strategy(method, templates)
            n = data.draw(st.integers(1, 3)) if method.client_streaming else 1
            check_case(cluster, tally, method, [data.draw(strategy) for _ in range(n)])

        return one_call

    try:
        for method in METHODS:
            calls_of(method)()
        # hypothesis stops a method early once its request space is exhausted (a few have tiny ones)
        assert tally.cases >= 0.9 * EXAMPLES and not tally.failures, tally.failures
        assert drawn == {m.path for m in METHODS}
        assert cluster.alive() and cluster.canary()
        assert all(v < 500 for v in cluster.rss_mb().values())
    finally:
        cluster.close()
        tmp.cleanup()


@settings(max_examples=400, deadline=None, derandomize=True)
@given(encoding=st.sampled_from(list(Encoding)) | st.integers(-2, 5), shape=st.lists(st.integers(-2, 70), max_size=5),
       data=st.binary(max_size=600), scale=st.floats(allow_nan=True, allow_infinity=True), zero_point=st.integers(-300, 300))
def test_the_codec_decodes_or_names_the_field(encoding, shape, data, scale, zero_point) -> None:
    t = Tensor(encoding, tuple(shape), data, scale, zero_point)
    try:
        x = codec.decode(t, tuple(shape[1:]), max_bytes=4096, max_batch=8)
    except (RequestError, LimitError) as e:
        assert str(e).startswith("tensor")
        return
    want = np.uint8 if encoding is Encoding.UINT8 else np.float32  # the raw image: decode_at normalises it
    assert x.dtype == want and tuple(x.shape) == tuple(shape) and math.isfinite(float(np.abs(x.astype(np.float64)).sum()))
