"""The mutation gate's groups (tools/mutation.py): which source files are mutated together, and
which tests must notice. Kept apart so that adding a module or a test file touches only this table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """Source files mutated together, and the tests that must notice."""

    files: tuple[str, ...]
    tests: tuple[str, ...]
    timeout_s: int = 120  # a test stuck (e.g. on a queue that never drains) fails after this


GROUPS: dict[str, Group] = {
    "codec": Group(("ecd/codec.py",), ("tests/ecd/test_codec.py", "tests/ecd/test_codec_and_proto.py", "tests/ecd/transport/test_serde.py")),
    "partition": Group(
        ("ecd/partition.py", "ecd/manifest.py"),
        (
            "tests/ecd/test_partition.py",
            "tests/ecd/test_manifest.py",
            "tests/ecd/test_block_runner.py",
            "tests/ecd/test_partition_sessions.py",
        ),
    ),
    "distribution": Group(("ecd/distribution.py",), ("tests/ecd/test_distribution.py", "tests/edge_node/test_backpressure.py")),
    "split": Group(("ecd/split.py", "ecd/leakage.py"), ("tests/ecd/test_split.py", "tests/ecd/test_split_checks.py", "tests/ecd/test_split_values.py",
                                                       "tests/ecd/test_leakage_values.py", "tests/ecd/test_leakage_learned.py")),
    "placement": Group(
        (
            "scheduling/placement/heuristics.py",
            "scheduling/placement/baselines.py",
            "scheduling/placement/exact.py",
            "scheduling/placement/problem.py",
        ),
        ("tests/scheduling/test_placement_orlib.py", "tests/scheduling/test_placement_exact.py",
         "tests/scheduling/test_placement_heuristics.py", "tests/scheduling/test_placement_tours.py",
         "tests/scheduling/test_placement_io.py", "tests/scheduling/test_placement_quality.py"),
        timeout_s=30,  # its slowest test takes 4 s; a mutated 2-opt that never stops must not cost 120 s
    ),
    "allocation": Group(
        ("scheduling/allocation/tapp.py", "scheduling/allocation/tapp_model.py", "scheduling/allocation/tapp_phases.py",
         "scheduling/allocation/tapp_exact.py", "scheduling/allocation/tapp_plus.py", "scheduling/allocation/coverage.py"),
        ("tests/scheduling/test_allocation_tapp.py", "tests/scheduling/test_allocation_coverage.py",
         "tests/scheduling/test_allocation_io.py", "tests/scheduling/test_allocation_values.py",
         "tests/scheduling/test_tapp_exact_values.py", "tests/scheduling/test_tapp_plus_values.py",
         "tests/scheduling/test_coverage_values.py"),
        timeout_s=40,  # its slowest test takes 8 s; a mutated local search that never stops must not cost 120 s
    ),
    "quality": Group(
        ("scheduling/quality/crowdpower.py",),
        ("tests/scheduling/test_quality.py", "tests/scheduling/test_crowdpower_quality_values.py",
         "tests/scheduling/test_crowdpower_site_values.py"),
    ),
    "auth": Group(
        ("ecd/transport/auth.py",),
        ("tests/ecd/transport/test_auth.py", "tests/integration/test_security.py"),
        timeout_s=60,
    ),
    "types": Group(("ecd/types.py",), ("tests/ecd/test_types.py", "tests/edge_node/test_stream_header.py")),
    # the services last: they change most often
    "edge": Group(
        ("edge_node/core.py", "edge_node/link.py", "edge_node/fair.py", "ecd/packing.py"),
        ("tests/edge_node", "tests/integration/test_bad_input.py"),
        timeout_s=180,
    ),
    "cloud": Group(
        ("cloud_server/core.py", "cloud_server/devices.py", "cloud_server/assignment.py", "cloud_server/leases.py",
         "cloud_server/edges.py", "cloud_server/live_placement.py", "cloud_server/crowdsensing.py", "cloud_server/served.py"),
        (
            "tests/cloud_server/test_core.py",
            "tests/cloud_server/test_core_control.py",
            "tests/cloud_server/test_core_edges.py",
            "tests/cloud_server/test_core_placement.py",
            "tests/cloud_server/test_core_crowdsensing.py",
            "tests/cloud_server/test_core_heads.py",
            "tests/cloud_server/test_leader.py",
            "tests/cloud_server/test_campaigns.py",
            "tests/cloud_server/test_heads_and_registry.py",
            "tests/cloud_server/test_placement_service.py",
            "tests/cloud_server/test_edge_ownership.py",
            "tests/cloud_server/test_leases.py",
            "tests/cloud_server/test_sites.py",
            "tests/cloud_server/test_writers.py",
            "tests/integration/test_bad_input.py",
        ),
        timeout_s=180,
    ),
    # the edge's gRPC face alone, against the fast files that pin it (scripted clouds, one real tier pair
    # per test): in "services", a mutant that broke the cloud link left tiers tests waiting up to 180 s
    "edge-service": Group(
        ("edge_node/service.py",),
        ("tests/edge_node/test_service_options.py", "tests/edge_node/test_service_cloud_calls.py",
         "tests/edge_node/test_service_cloud_start.py", "tests/edge_node/test_service_start.py",
         "tests/edge_node/test_service_stop.py", "tests/edge_node/test_cloud_link_stop.py", "tests/edge_node/test_frame_batches.py",
         "tests/edge_node/test_edge_service.py", "tests/edge_node/test_edge_refuses.py", "tests/edge_node/test_stream_header.py",
         "tests/edge_node/test_fairness.py", "tests/edge_node/test_fair_cost.py", "tests/edge_node/test_backpressure.py",
         "tests/edge_node/test_browser_enrol.py", "tests/ecd/test_advertise.py", "tests/integration/test_security.py",
         "tests/integration/test_bad_input.py"),
        timeout_s=30,  # its slowest test takes 4 s; a broken cloud link must not hold each mutant 180 s
    ),
    "services": Group(
        ("cloud_server/scheduler_service.py",),
        ("tests/edge_node", "tests/cloud_server/test_service_operator.py", "tests/cloud_server/test_service_calls.py",
         "tests/cloud_server/test_service_holders.py", "tests/cloud_server/test_service_monitor.py",
         "tests/cloud_server/test_service_lifecycle.py", "tests/cloud_server/test_panel.py", "tests/cloud_server/test_disk_full.py",
         "tests/integration/test_security.py",
         "tests/integration/test_bad_input.py", "tests/integration/test_identity.py",
         # the Scheduler service's calls and its client, end to end
         "tests/cloud_server/test_placement_service.py", "tests/cloud_server/test_campaigns.py", "tests/cloud_server/test_sites.py"),
        timeout_s=180,
    ),
    # the cloud's gRPC face and start_cloud, apart: nearly every test starts a cloud, so a mutant of
    # start_cloud reruns each mapped test; here only the fast files that pin this module (about 95 s
    # in all on 2 cores, where the services group's list takes many minutes per surviving mutant)
    "cloud-service": Group(
        ("cloud_server/service.py",),
        ("tests/cloud_server/test_service_calls.py", "tests/cloud_server/test_service_drain.py", "tests/cloud_server/test_service_holders.py",
         "tests/cloud_server/test_service_lifecycle.py", "tests/cloud_server/test_service_monitor.py",
         "tests/cloud_server/test_service_operator.py", "tests/cloud_server/test_service_start.py",
         "tests/cloud_server/test_panel.py", "tests/cloud_server/test_enrolment_codes.py", "tests/cloud_server/test_disk_full.py",
         "tests/integration/test_security.py", "tests/integration/test_identity.py"),
        timeout_s=120,
    ),
    # the device agent's gRPC face, its stream state machine and what was split out of it (the frames in
    # flight, the requests to the loop); test_gray_failure is the one test
    # that abandons a real hung edge (GrpcEdge.abandon), test_stream drives the machine with fakes
    "device": Group(
        ("device_agent/service.py", "device_agent/stream.py", "device_agent/inflight.py", "device_agent/requests.py"),
        ("tests/device_agent", "tests/integration/test_gray_failure.py"),
        timeout_s=120,
    ),
    # the agent's measured link and energy, and the live re-split they drive (issue 34)
    "adapt": Group(
        ("device_agent/link.py", "device_agent/energy.py", "device_agent/adapt.py"),
        ("tests/device_agent/test_link.py", "tests/device_agent/test_adapt.py", "tests/device_agent/test_adapt_live.py"),
        timeout_s=120,
    ),
    # browser devices (issue 33): enrolment codes, the page's key, the edge's page and its wire
    "browser": Group(
        ("cloud_server/enrolment.py", "ecd/devicekey.py", "ecd/transport/browser_wire.py", "edge_node/browser.py"),
        ("tests/cloud_server/test_enrolment_codes.py", "tests/edge_node/test_browser_enrol.py"),
        timeout_s=120,
    ),
    # the registry and what was split out of it: the scheduler lease and the placements it fences
    # (test_registry_tables pins them on both databases), the write path on a full disk
    # (test_registry_storage; the whole cloud on a real full tmpfs, test_disk_full, is root-only and slow)
    "registry": Group(
        ("cloud_server/registry.py", "cloud_server/registry_db.py", "cloud_server/registry_records.py",
         "cloud_server/registry_schema.py", "cloud_server/registry_leader.py", "cloud_server/registry_storage.py"),
        ("tests/cloud_server/test_registry_backends.py", "tests/cloud_server/test_heads_and_registry.py",
         "tests/cloud_server/test_registry_values.py", "tests/cloud_server/test_registry_tables.py",
         "tests/cloud_server/test_registry_migrations.py", "tests/cloud_server/test_registry_storage.py",
         "tests/cloud_server/test_registry_queries.py", "tests/cloud_server/test_registry_lease.py"),
    ),
}
