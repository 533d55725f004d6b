"""Device -> edge -> cloud over real gRPC servers on loopback."""

from __future__ import annotations

import numpy as np
import pytest

from ecd import zoo
from ecd.manifest import load_heldout
from ecd.partition import Partition
from ecd.splitcheck import relative_max_abs_diff
from ecd.v1 import ecd_pb2 as pb
from harness import Tiers, compact, frame_for


@pytest.fixture(scope="module")
def digits():
    m = zoo.load_manifest("digits_cnn")
    held = load_heldout(m)
    x = m.input.preprocess(held.images[:6])
    return m, x, Partition(m, 0, m.n_blocks).run(x), held.labels[:6], held.images[:6]


@pytest.mark.parametrize("wire", ["complete", "compact"])
def test_every_split_pair_equals_single_process(tiers: Tiers, digits, wire: str) -> None:
    """Every (b_d, b_e), each frame of a stream in flight at once: as revision 1 sends them
    (complete frames, float32), and as revision 2 does (compact frames; the raw uint8 image at
    split 0)."""
    m, x, reference, _, images = digits
    n = m.n_blocks
    checked = 0
    for b_e in range(n + 1):
        tiers.cloud.core.devices.edge_boundary = b_e
        for b_d in range(b_e + 1):
            a = tiers.register(split=b_d)
            assert (a.split_device, a.split_edge) == (b_d, b_e)
            if wire == "compact" and b_d == 0:
                frames = [frame_for(a, m, images[i : i + 1], i + 1, pb.UINT8_IMAGE) for i in range(len(x))]
            else:
                frames = [frame_for(a, m, x[i : i + 1], i + 1) for i in range(len(x))]
            if wire == "compact":
                frames = compact(frames)
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
    m, x, _, _, _ = digits
    a = tiers.register(split=4)
    results = list(tiers.edge_stub.Stream(iter([frame_for(a, m, x[:1], 1)]), timeout=30))
    r = results[0]
    assert r.uplink_bytes > m.activation_bytes(4)  # the tensor plus the frame's fields
    assert r.edge_to_cloud_bytes > 0
    assert r.cloud_compute_s > 0


def test_two_devices_stream_at_once(tiers: Tiers, digits) -> None:
    import threading

    m, x, reference, _, _ = digits
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


def test_a_compact_frame_that_contradicts_its_stream_is_refused_alone(tiers: Tiers, digits) -> None:
    m, x, reference, _, _ = digits
    a = tiers.register(split=3)
    frames = compact([frame_for(a, m, x[i : i + 1], i + 1) for i in range(4)])
    frames[1].split_device = 4  # a later frame may leave the bound fields unset, not change them
    frames[2].model_version = "0" * 16
    results = sorted(tiers.edge_stub.Stream(iter(frames), timeout=30), key=lambda r: r.frame_id)  # errors come first
    assert [r.frame_id for r in results] == [1, 2, 3, 4]
    assert results[1].error.code == 3 and results[1].error.message.startswith("split_device: differs from the stream's first frame")
    assert results[2].error.code == 3 and results[2].error.message.startswith("model_version: differs")
    for i in (0, 3):
        assert not results[i].HasField("error")
        assert np.abs(np.asarray(results[i].output) - reference[i]).max() <= 1e-4


def test_an_unknown_protocol_revision_is_refused_by_name(tiers: Tiers, digits) -> None:
    m, x, _, _, _ = digits
    a = tiers.register(split=3)
    first = frame_for(a, m, x[:1], 1)
    first.protocol_revision = 9
    (r,) = tiers.edge_stub.Stream(iter([first]), timeout=30)
    assert r.error.code == 9 and r.error.message.startswith("protocol_revision: this node speaks revisions 1..3")


def test_uint8_is_for_split_0_only(tiers: Tiers, digits) -> None:
    m, _, _, _, images = digits
    a = tiers.register(split=2)
    frame = frame_for(a, m, images[:1], 1, pb.UINT8_IMAGE)
    (r,) = tiers.edge_stub.Stream(iter([frame]), timeout=30)
    assert r.error.code == 3 and r.error.message.startswith("tensor.encoding: UINT8_IMAGE is the raw image, for split 0 only")


def test_streams_are_batched_and_a_malformed_frame_fails_alone(tmp_path, digits) -> None:
    """Four devices stream at once into one edge node that waits up to 50 ms to fill a batch: the
    edge and the cloud run frames of different streams together; every frame is answered once, the
    malformed ones with their own error, the others exactly as one process computes them."""
    import threading
    from dataclasses import replace

    from cloud_server.config import CloudConfig
    from edge_node.service import EdgeConfig
    from harness import start_tiers, stop_tiers

    m, x, reference, _, _ = digits
    t = start_tiers(tmp_path, CloudConfig(batch_max_delay_ms=20), replace(EdgeConfig(), batch_max_delay_ms=50))
    try:
        devices = [t.register(split=2, name=f"d{k}") for k in range(4)]
        t.register(split=2)  # warm: the edge fetches the model on a first frame
        results: dict[int, list] = {}

        def stream(k: int) -> None:
            frames = [frame_for(devices[k], m, x[i % 6 : i % 6 + 1], i + 1) for i in range(24)]
            for i in (5, 17):
                frames[i].tensor.shape[1] += 1  # malformed: the codec refuses it by name
            results[k] = sorted(t.edge_stub.Stream(iter(compact(frames)), timeout=60), key=lambda r: r.frame_id)

        threads = [threading.Thread(target=stream, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        for k in range(4):
            rs = results[k]
            assert [r.frame_id for r in rs] == list(range(1, 25))
            for i, r in enumerate(rs):
                if i in (5, 17):
                    assert r.error.code == 3 and r.error.message.startswith("tensor.shape: expected"), r.error.message
                else:
                    assert not r.HasField("error"), r.error.message
                    assert np.abs(np.asarray(r.output) - reference[i % 6]).max() <= 1e-4
        edge_batches = t.edge.core._batchers[(m.model_id, m.version)].stats
        cloud_batches = t.cloud.core.models[m.model_id].batcher.stats
        assert edge_batches.largest > 1 and cloud_batches.largest > 1, (edge_batches, cloud_batches)
        assert edge_batches.images == 4 * 22 and cloud_batches.images == 4 * 22  # each good frame run once per tier
    finally:
        stop_tiers(t)


def test_past_a_raw_image_the_edge_forwards_in_the_devices_encoding(tiers: Tiers, digits) -> None:
    """A device registered for int8 sends its image as UINT8 at split 0; the edge runs blocks
    [0, 5) and sends the activation on in int8, not float32 (less than half the edge -> cloud bytes here)."""
    m, _, reference, _, images = digits
    sizes = {}
    for enc in (pb.FLOAT32, pb.INT8_AFFINE):
        a = tiers.register(split=0, encoding=enc)
        assert a.encoding == enc
        frames = compact([frame_for(a, m, images[i : i + 1], i + 1, pb.UINT8_IMAGE) for i in range(3)])
        results = list(tiers.edge_stub.Stream(iter(frames), timeout=30))
        assert all(not r.HasField("error") for r in results)
        sizes[enc] = results[-1].edge_to_cloud_bytes
        head = next(h for h in results[0].heads if h.head == "class")
        assert head.index == int(reference[0].argmax())
    assert sizes[pb.INT8_AFFINE] < 0.5 * sizes[pb.FLOAT32], sizes  # the frame's metadata is the rest
