"""Tensor encodings, the committed stubs against the .proto, and config resolution."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ecd import codec
from ecd.config import add_arguments, option, resolve
from ecd.errors import ConfigError, LimitError, RequestError
from ecd.types import Encoding, Tensor

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("encoding,tol", [(Encoding.FLOAT32, 0.0), (Encoding.FLOAT16, 1e-3), (Encoding.INT8, 0.5 / 255 * 1.01)])
def test_round_trip(encoding: Encoding, tol: float) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    t = codec.encode(x, encoding)
    y = codec.decode(t, (3, 4, 5), max_bytes=10**6)
    span = float(x.max() - x.min()) if encoding is Encoding.INT8 else float(np.abs(x).max())
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tol * span + 1e-7
    assert len(t.data) == x.size * {Encoding.FLOAT32: 4, Encoding.FLOAT16: 2, Encoding.INT8: 1}[encoding]


def test_decode_checks_before_allocating() -> None:
    t = Tensor(Encoding.FLOAT32, (60, 3, 4, 5_000), b"")
    with pytest.raises(LimitError, match="max_tensor_bytes") as e:
        codec.decode(t, (3, 4, 5_000), max_bytes=10**6)
    assert e.value.status == "RESOURCE_EXHAUSTED"
    nan = codec.encode(np.full((1, 2), np.nan, np.float32))
    with pytest.raises(RequestError, match="NaN"):
        codec.decode(nan, (2,), max_bytes=100)
    bad_scale = codec.encode(np.ones((1, 2), np.float32), Encoding.INT8)
    bad_scale.scale = 0.0
    with pytest.raises(RequestError, match="scale"):
        codec.decode(bad_scale, (2,), max_bytes=100)
    unknown = Tensor(0, (1, 2), b"\0" * 8)  # type: ignore[arg-type] — an encoding number the wire may carry
    with pytest.raises(RequestError, match="tensor.encoding"):
        codec.decode(unknown, (2,), max_bytes=100)


def test_decode_limits_the_batch_and_the_decoded_size_not_just_the_wire_bytes() -> None:
    """A few KiB of int8 may stand for a batch the next blocks expand into gigabytes (the issue's
    16 MiB frame of 16,384 images took the edge to 7.6 GB): both limits hold on the header alone."""
    batch = Tensor(Encoding.INT8, (16_384, 1, 32, 32), b"", 1.0, 0)  # the payload is never looked at
    with pytest.raises(LimitError, match=r"tensor.shape\[0\]: a batch of 16384 exceeds the limit of 64 \(max_batch\)"):
        codec.decode(batch, (1, 32, 32), max_bytes=64 * 2**20)
    int8 = codec.encode(np.ones((4, 100), np.float32), Encoding.INT8)  # 400 wire bytes, 1600 as float32
    with pytest.raises(LimitError, match="1600 bytes as float32 .* limit of 1000"):
        codec.decode(int8, (100,), max_bytes=1000)
    assert codec.decode(int8, (100,), max_bytes=1600).shape == (4, 100)
    assert codec.decode(int8, (100,), max_bytes=1600, max_batch=4).shape == (4, 100)
    with pytest.raises(LimitError, match="max_batch"):
        codec.decode(int8, (100,), max_bytes=1600, max_batch=3)


def test_int8_that_dequantises_to_infinity_is_refused() -> None:
    """A finite scale can still overflow float32 once multiplied out: checked after dequantising."""
    t = codec.encode(np.array([[0.0, 1.0]], np.float32), Encoding.INT8)
    t.scale = 3e38
    with pytest.raises(RequestError, match="tensor.data: holds NaN or infinite values"):
        codec.decode(t, (2,), max_bytes=100)


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    """Regenerating from proto/ must give the committed ecd/v1 files byte for byte."""
    from ecd.protogen import generate

    fresh = {p.name: p.read_bytes() for p in generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in sorted((REPO / "ecd" / "v1").glob("ecd_pb2*"))}
    assert set(fresh) == {"ecd_pb2.py", "ecd_pb2.pyi", "ecd_pb2_grpc.py"}
    assert fresh == committed, "stubs drifted from proto/ecd/v1/ecd.proto: run python -m ecd.protogen"


@dataclasses.dataclass(frozen=True)
class Demo:
    port: int = option(0, "port")
    name: str = option("x", "name")
    models: tuple = option(("a",), "models")
    on: bool = option(False, "switch")


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Demo)
    file = tmp_path / "c.toml"
    file.write_text('port = 1\nname = "file"\nmodels = ["m1", "m2"]\n')
    monkeypatch.setenv("ECD_T_NAME", "env")
    monkeypatch.setenv("ECD_T_ON", "true")
    cfg = resolve(Demo, parser.parse_args(["--config", str(file), "--port", "7"]), "ECD_T_")
    assert cfg == Demo(port=7, name="env", models=("m1", "m2"), on=True)
    file.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="colour"):
        resolve(Demo, parser.parse_args(["--config", str(file)]), "ECD_T_")
    monkeypatch.setenv("ECD_T_PORT", "eighty")
    with pytest.raises(ConfigError, match="port"):
        resolve(Demo, parser.parse_args([]), "ECD_T_")


@dataclasses.dataclass(frozen=True)
class Served:
    port: int = option(0, "port", command=50051)


def test_the_command_has_well_known_ports_the_library_ephemeral_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Served)
    assert Served().port == 0  # code embedding a service binds any free port
    assert resolve(Served, parser.parse_args([]), "ECD_S_").port == 50051  # the operator's command, the documented one
    assert "(default 50051)" in parser.format_help()
    assert resolve(Served, parser.parse_args(["--port", "0"]), "ECD_S_").port == 0  # 0 still allowed
    file = tmp_path / "c.toml"
    file.write_text("port = 7\n")
    assert resolve(Served, parser.parse_args(["--config", str(file)]), "ECD_S_").port == 7
    monkeypatch.setenv("ECD_S_PORT", "8")
    assert resolve(Served, parser.parse_args([]), "ECD_S_").port == 8


def test_the_tiers_well_known_ports() -> None:
    from cloud_server.config import CloudConfig
    from edge_node.service import EdgeConfig

    commands = {(cls.__name__, f.name): f.metadata["command"] for cls in (CloudConfig, EdgeConfig)
                for f in dataclasses.fields(cls) if f.metadata.get("command") is not None}
    assert commands == {("CloudConfig", "port"): 50051, ("CloudConfig", "metrics_port"): 9100,
                        ("EdgeConfig", "port"): 50061, ("EdgeConfig", "metrics_port"): 9101}


@dataclasses.dataclass(frozen=True)
class Renamed:
    w_privacy: float = option(0.5, "weight", was=("privacy_weight",))


def test_a_renamed_option_is_still_taken_under_its_former_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployments written before a rename (flags, ECD_* variables, config files) keep working;
    where both names are given, the current one wins."""
    parser = argparse.ArgumentParser()
    add_arguments(parser, Renamed)
    assert resolve(Renamed, parser.parse_args(["--privacy-weight", "0.1"]), "ECD_T_") == Renamed(0.1)
    assert resolve(Renamed, parser.parse_args(["--w-privacy", "0.2"]), "ECD_T_") == Renamed(0.2)
    file = tmp_path / "c.toml"
    file.write_text("privacy_weight = 0.3\n")
    assert resolve(Renamed, parser.parse_args(["--config", str(file)]), "ECD_T_") == Renamed(0.3)
    monkeypatch.setenv("ECD_T_PRIVACY_WEIGHT", "0.4")
    assert resolve(Renamed, parser.parse_args([]), "ECD_T_") == Renamed(0.4)
    monkeypatch.setenv("ECD_T_W_PRIVACY", "0.6")
    assert resolve(Renamed, parser.parse_args([]), "ECD_T_") == Renamed(0.6)
