"""Device -> edge -> cloud over real gRPC servers on loopback."""

from __future__ import annotations

import numpy as np
import pytest

from ecd import zoo
from ecd.manifest import load_heldout
from ecd.partition import Partition
from ecd.splitcheck import relative_max_abs_diff
from harness import Tiers, frame_for


@pytest.fixture(scope="module")
def digits():
    m = zoo.load_manifest("digits_cnn")
    held = load_heldout(m)
    x = m.input.preprocess(held.images[:6])
    return m, x, Partition(m, 0, m.n_blocks).run(x), held.labels[:6]


def test_every_split_pair_equals_single_process(tiers: Tiers, digits) -> None:
    m, x, reference, _ = digits
    n = m.n_blocks
    checked = 0
    for b_e in range(n + 1):
        tiers.cloud.core.edge_boundary = b_e
        for b_d in range(b_e + 1):
            a = tiers.register(split=b_d)
            assert (a.split_device, a.split_edge) == (b_d, b_e)
            frames = [frame_for(a, m, x[i : i + 1], i + 1) for i in range(len(x))]
            results = list(tiers.edge_stub.Stream(iter(frames), timeout=60))
            assert [r.frame_id for r in results] == [f.frame_id for f in frames]
            for i, r in enumerate(results):
                assert not r.HasField("error"), r.error.message
                assert (r.split_device, r.split_edge) == (b_d, b_e)
                out = np.asarray(r.output, dtype=np.float32)
                assert relative_max_abs_diff(out[None], reference[i : i + 1]) <= 1e-4, (b_d, b_e)
                head = next(h for h in r.heads if h.head == "class")
                assert head.index == int(reference[i].argmax())
            checked += 1
    assert checked == (n + 1) * (n + 2) // 2


def test_uplink_and_hop_bytes_are_reported(tiers: Tiers, digits) -> None:
    m, x, _, _ = digits
    a = tiers.register(split=4)
    results = list(tiers.edge_stub.Stream(iter([frame_for(a, m, x[:1], 1)]), timeout=30))
    r = results[0]
    assert r.uplink_bytes > m.activation_bytes(4)  # the tensor plus the frame's fields
    assert r.edge_to_cloud_bytes > 0
    assert r.cloud_compute_s > 0


def test_two_devices_stream_at_once(tiers: Tiers, digits) -> None:
    import threading

    m, x, reference, _ = digits
    outs: dict[int, list] = {}

    def device(split: int) -> None:
        a = tiers.register(split=split, name=f"d{split}")
        frames = [frame_for(a, m, x[i % len(x) : i % len(x) + 1], i + 1) for i in range(30)]
        outs[split] = list(tiers.edge_stub.Stream(iter(frames), timeout=60))

    threads = [threading.Thread(target=device, args=(s,)) for s in (0, 3, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for split, results in outs.items():
        assert len(results) == 30
        assert all(not r.HasField("error") for r in results)
        assert [next(h.index for h in r.heads if h.head == "class") for r in results] == [
            int(reference[i % len(x)].argmax()) for i in range(30)
        ]
    assert set(outs) == {0, 3, 6}
