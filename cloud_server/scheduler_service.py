"""The Scheduler service: the operator's side of the cloud (placement, campaigns, reputations, site
selection, revocation), its servicer over the core's parts and its client (``ecd schedule``).

Who may call: under mutual TLS the policy (:mod:`ecd.transport.auth`) admits only operator
certificates; on a plaintext cloud (loopback) every call passes :func:`operator_check` first, which
takes calls only from ``operator_peers``: these calls show every device's position and move devices.
"""

from __future__ import annotations

from typing import Callable

import grpc

from cloud_server.core import CloudCore
from ecd.errors import PeerError, PermissionDeniedError
from ecd.scheduler_types import CampaignReport, CampaignSpec, DeviceQuality, PlacementReport, SiteRequest, SiteSelection
from ecd.transport import serde
from ecd.transport import tls as tls_
from ecd.transport.auth import caller
from ecd.transport.rpc import call_core, peer_host
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc


def operator_check(allowed: tuple[str, ...]) -> Callable[[str], None]:
    """Refuse operator calls from hosts not in ``allowed`` (until the control plane authenticates
    callers, this keeps every device's position and the schedulers' controls off the network)."""

    def check(peer: str) -> None:
        host = peer_host(peer)
        if "any" not in allowed and host not in allowed and not (host == "unix" and "unix" in allowed):
            raise PermissionDeniedError(f"operator: calls from {host} are not taken here (operator_peers)")

    return check


async def require_operator(context, check: Callable[[str], None]) -> None:
    """An operator-only call: under mutual TLS the policy already admitted only operators; in
    plaintext (loopback) only ``operator_peers`` may ask (``check``)."""
    if caller().role != "operator":
        await call_core(context, check, context.peer())


class SchedulerServicer(pb_grpc.SchedulerServicer):
    """Operator-facing: placement, campaigns, reputations. Every call passes ``check`` first."""

    def __init__(self, core: CloudCore, check: Callable[[str], None]):
        self.core = core
        self.check = check

    async def _operator(self, context) -> None:
        await require_operator(context, self.check)

    async def Place(self, request, context):
        await self._operator(context)
        report = await call_core(context, self.core.placement.place, request.method, request.seed, "operator", in_thread=True)
        return serde.placement_report_to_pb(report)

    async def GetPlacement(self, request, context):
        await self._operator(context)
        return serde.placement_report_to_pb(await call_core(context, self.core.placement.report))

    async def CreateCampaign(self, request, context):
        await self._operator(context)
        report = await call_core(context, lambda r: self.core.crowdsensing.create_campaign(serde.campaign_spec_from_pb(r)), request,
                              in_thread=True)
        return serde.campaign_report_to_pb(report)

    async def GetCampaign(self, request, context):
        await self._operator(context)
        return serde.campaign_report_to_pb(await call_core(context, self.core.crowdsensing.campaign_report, request.campaign_id))

    async def RevokeDevice(self, request, context):
        await self._operator(context)
        await call_core(context, self.core.devices.revoke, request.device_id)
        return pb.RevokeResponse()

    async def ListReputations(self, request, context):
        await self._operator(context)
        devices, floor = await call_core(context, self.core.crowdsensing.reputations)
        return pb.Reputations(devices=[serde.device_quality_to_pb(q) for q in devices], floor=floor)

    async def SelectSite(self, request, context):
        await self._operator(context)
        selection = await call_core(context, lambda r: self.core.crowdsensing.select_site(serde.site_request_from_pb(r)), request)
        return serde.site_selection_to_pb(selection)


class SchedulerClient:
    """What ``ecd schedule`` asks a running cloud (operator side)."""

    def __init__(self, target: str, timeout_s: float = 60.0, tls: tls_.Tls | None = None):
        self.channel = tls_.channel(target, tls, "cloud")
        self.stub = pb_grpc.SchedulerStub(self.channel)
        self.target = target
        self.timeout_s = timeout_s

    def _call(self, fn, request):
        try:
            return fn(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise PeerError(e.code().name, f"{e.code().name}: {e.details()} (cloud {self.target})") from None

    def place(self, method: str = "", seed: int = 0) -> PlacementReport:
        return serde.placement_report_from_pb(self._call(self.stub.Place, pb.PlaceRequest(method=method, seed=seed)))

    def placement(self) -> PlacementReport:
        return serde.placement_report_from_pb(self._call(self.stub.GetPlacement, pb.GetPlacementRequest()))

    def create_campaign(self, spec: CampaignSpec) -> CampaignReport:
        return serde.campaign_report_from_pb(self._call(self.stub.CreateCampaign, serde.campaign_spec_to_pb(spec)))

    def campaign(self, campaign_id: str) -> CampaignReport:
        return serde.campaign_report_from_pb(self._call(self.stub.GetCampaign, pb.CampaignRequest(campaign_id=campaign_id)))

    def select_site(self, request: SiteRequest) -> SiteSelection:
        return serde.site_selection_from_pb(self._call(self.stub.SelectSite, serde.site_request_to_pb(request)))

    def revoke(self, device_id: str) -> None:
        self._call(self.stub.RevokeDevice, pb.RevokeRequest(device_id=device_id))

    def reputations(self) -> tuple[list[DeviceQuality], float]:
        reply = self._call(self.stub.ListReputations, pb.ReputationsRequest())
        return [serde.device_quality_from_pb(q) for q in reply.devices], reply.floor

    def close(self) -> None:
        self.channel.close()
