"""The cloud core's task heads (cloud_server/served.py): stored, listed and limited exactly."""

from __future__ import annotations

import pytest
from cloud_core_harness import (
    Cloud,
    M,
)

from cloud_server.heads import BUILTIN_HEAD
from ecd.errors import (
    LimitError,
    RequestError,
)
from ecd.limits import (
    MAX_HEAD_LABELS,
    MAX_HEADS_PER_MODEL,
)
from ecd.types import (
    HeadSpec,
)

# --- heads -------------------------------------------------------------------------------------


def head(name: str, labels: list[str], bias: list[float] | None = None) -> HeadSpec:
    return HeadSpec(M.model_id, name, labels, [0.25] * (len(labels) * len(M.labels)), bias if bias is not None else [], "logits")


def test_a_head_is_stored_and_listed_as_given(cloud: Cloud) -> None:
    assert cloud.core.models.add_head(head("odd", ["even", "odd"], [1.5, -2.0])) == 2
    listed = cloud.core.models.list_heads(M.model_id)
    assert [h.name for h in listed] == [BUILTIN_HEAD, "odd"]
    assert listed[1] == HeadSpec(M.model_id, "odd", ["even", "odd"], [0.25] * 20, [1.5, -2.0], "logits")
    assert listed[0].labels == list(M.labels) and listed[0].model_id == M.model_id
    assert cloud.core.registry.heads(M.model_id)[0]["bias"] == [1.5, -2.0]
    assert cloud.core.models.add_head(head("odd", ["a", "b", "c"])) == 2  # replaced
    assert cloud.core.models.list_heads(M.model_id)[1].bias == [0.0, 0.0, 0.0]


def test_head_limits_are_exact(cloud: Cloud) -> None:
    labels = [f"l{k}" for k in range(MAX_HEAD_LABELS)]
    assert cloud.core.models.add_head(head("wide", labels)) == 2
    with pytest.raises(LimitError, match=rf"^labels: at most {MAX_HEAD_LABELS} per head, got {MAX_HEAD_LABELS + 1}$"):
        cloud.core.models.add_head(head("wider", labels + ["x"]))
    with pytest.raises(RequestError, match=r"^labels\[1\]: control characters are not allowed"):
        cloud.core.models.add_head(head("bad", ["a", "b\x07"]))
    for k in range(MAX_HEADS_PER_MODEL - 2):
        cloud.core.models.add_head(head(f"h{k}", ["a"]))
    assert len(cloud.core.models.list_heads(M.model_id)) == MAX_HEADS_PER_MODEL
    with pytest.raises(LimitError, match=rf"^name: {M.model_id} already has {MAX_HEADS_PER_MODEL} heads \(the limit\); replace one instead$"):
        cloud.core.models.add_head(head("one_more", ["a"]))
    assert cloud.core.models.add_head(head("h0", ["b"])) == MAX_HEADS_PER_MODEL  # replacing one at the limit is fine
