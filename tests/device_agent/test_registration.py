"""An agent whose registration the cloud refuses for now (its rate limit) retries with backoff and
streams once admitted; one that gives up still writes its report, saying why."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from cloud_server.config import CloudConfig
from device_agent.agent import AgentConfig, run_agent
from ecd.errors import EcdError
from ecd.v1 import ecd_pb2 as pb
from harness import Tiers, start_tiers, stop_tiers

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def limited(tmp_path: Path):
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(registrations_per_s=1.0))  # a burst of 5, then one a second
    yield t
    stop_tiers(t)


def exhaust(t: Tiers) -> None:
    """Spend the registration budget of this host (the test's loopback address) at the cloud."""
    request = pb.RegisterDeviceRequest(device_name="filler", profile="pi4", radio="wifi", model_id="digits_cnn", split_device=2,
                                       preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), encoding=pb.FLOAT32)
    for _ in range(10):  # the burst, less what the edge node's registration took
        try:
            t.cloud_stub.RegisterDevice(request, timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return
    raise AssertionError("the cloud never refused a registration")


def config(t: Tiers, tmp_path: Path, **kw) -> AgentConfig:
    return AgentConfig(cloud=f"127.0.0.1:{t.cloud.port}", frames=3, split=2, model_dir=str(tmp_path / "agent"),
                       report=str(tmp_path / "report.json"), **kw)


def test_a_rate_limited_registration_is_retried_and_the_agent_streams(limited: Tiers, tmp_path: Path) -> None:
    exhaust(limited)
    report = run_agent(config(limited, tmp_path, register_retry_s=30.0))
    assert (report.frames, report.errors, report.exit) == (3, 0, "completed") and report.device_id
    assert json.loads((tmp_path / "report.json").read_text())["device_id"] == report.device_id


def test_an_agent_that_gives_up_registering_writes_its_report_saying_why(limited: Tiers, tmp_path: Path) -> None:
    exhaust(limited)
    with pytest.raises(EcdError, match=r"^RESOURCE_EXHAUSTED: registrations: more than 1 a second"):
        run_agent(config(limited, tmp_path, register_retry_s=0.0))
    written = json.loads((tmp_path / "report.json").read_text())
    assert (written["device_id"], written["frames"], written["split_device"]) == ("", 0, -1)
    assert written["exit"].startswith("RESOURCE_EXHAUSTED: registrations: more than 1 a second")
