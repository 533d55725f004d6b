"""A client written from the ``.proto`` alone still streams (issue 31): stubs generated from
proto/ecd/v1/ecd.proto into an empty folder, used by a process that imports nothing of this project,
register a device and stream the raw image at split 0 both ways — several frames per message
(revision 3's ``StreamBatches``) and one frame per message (``Stream``, revision 2) — and every
answer equals what one process computes. What such a client must know is in the proto's comments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecd import zoo
from ecd.manifest import load_heldout
from ecd.partition import Partition

ROOT = Path(__file__).resolve().parents[2]

CLIENT = r'''
import json, sys
import grpc
from ecd.v1 import ecd_pb2 as pb, ecd_pb2_grpc as rpc
assert pb.__file__.startswith(sys.path[0]), pb.__file__  # the generated stubs, not this project's package
cloud, edge, images = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
a = rpc.CloudServerStub(grpc.insecure_channel(cloud)).RegisterDevice(pb.RegisterDeviceRequest(
    device_name="from-proto", profile="pi4", radio="wifi", model_id="digits_cnn", split_device=0, encoding=pb.FLOAT32,
    preferences=pb.Preferences(w_energy=1.0, w_privacy=0.0)), timeout=30)

def frame(i, first, revision):
    pixels = bytes(images[i])  # one grey 32 x 32 image, as captured: [N, H, W, C] = [1, 32, 32, 1]
    f = pb.Frame(frame_id=i + 1, tensor=pb.Tensor(encoding=pb.UINT8_IMAGE, shape=[1, 32, 32, 1], data=pixels))
    if first:  # the stream's first frame binds it; the others carry only what changes
        f.device_id, f.token, f.model_id, f.model_version, f.protocol_revision = a.device_id, a.token, a.model_id, a.model_version, revision
    return f

stub = rpc.EdgeNodeStub(grpc.insecure_channel(edge))
n = len(images)
batches = [pb.FrameBatch(frames=[frame(i, i == 0, 3) for i in range(0, n // 2)]),
           pb.FrameBatch(frames=[frame(i, False, 3) for i in range(n // 2, n)])]
batched = {r.frame_id: list(r.output) for m in stub.StreamBatches(iter(batches), timeout=60) for r in m.results}
single = {r.frame_id: list(r.output) for r in stub.Stream(iter([frame(i, i == 0, 2) for i in range(n)]), timeout=60)}
print(json.dumps({"batched": batched, "single": single}))
'''


def test_a_client_generated_from_the_proto_alone_streams_both_ways(tiers, tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) generates the stubs")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={stubs}",
                    f"--grpc_python_out={stubs}", str(ROOT / "proto" / "ecd" / "v1" / "ecd.proto")], check=True, timeout=120)
    for package in (stubs / "ecd", stubs / "ecd" / "v1"):  # found before this project's installed ecd package
        (package / "__init__.py").write_text("")
    m = zoo.load_manifest("digits_cnn")
    images = load_heldout(m).images[:6]
    reference = Partition(m, 0, m.n_blocks).run(m.input.preprocess(images))
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(stubs)!r})\n{CLIENT}",
                           f"127.0.0.1:{tiers.cloud.port}", f"127.0.0.1:{tiers.edge.port}",
                           json.dumps([img.reshape(-1).tolist() for img in images])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    for way in ("batched", "single"):
        assert sorted(int(k) for k in got[way]) == [1, 2, 3, 4, 5, 6], way
        for k, output in got[way].items():
            assert np.abs(np.asarray(output) - reference[int(k) - 1]).max() <= 1e-4, way
