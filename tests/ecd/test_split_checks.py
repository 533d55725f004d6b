"""``ecd.split``'s checks and reports, exactly: the per-frame split check every tier runs, the
normalised preferences, the bytes and energies per split, the decision's JSON, and each refusal
with the message that names the field.

``test_split.py`` checks the decision's shape (monotone in the weights, the floor respected); these
pin the values and messages around it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from ecd import zoo
from ecd.errors import PreconditionError, RequestError
from ecd.manifest import Manifest
from ecd.profiles import load_device, load_radio
from ecd.split import PreferenceError, Preferences, block_energy, check_split, comm_energy, decide_split, decide_splits, encoded_bytes
from ecd.leakage import PrivacyNotMeasuredError, privacy_curve

PI4, WIFI, LTE = load_device("pi4"), load_radio("wifi"), load_radio("lte")


@pytest.fixture
def m() -> Manifest:
    return zoo.load_manifest(zoo.DEFAULT_MODEL)


def test_check_split_takes_every_split_from_the_floor_to_n(m: Manifest) -> None:
    for floor in range(m.n_blocks + 1):
        for b in range(floor, m.n_blocks + 1):
            check_split(m, b, floor)


@pytest.mark.parametrize("split", [-1, 7, 100])
def test_check_split_refuses_a_split_outside_the_model(m: Manifest, split: int) -> None:
    with pytest.raises(RequestError, match=rf"^split_device: expected 0\.\.6 for digits_cnn, got {split}$"):
        check_split(m, split, 0)


def test_check_split_refuses_below_the_floor(m: Manifest) -> None:
    with pytest.raises(PreconditionError, match=r"^split_device: 2 is below the device's floor \(min_split 3\)$"):
        check_split(m, 2, 3)
    with pytest.raises(PreconditionError, match="below the device's floor"):
        check_split(m, 0, 1)


def test_preferences_normalise_the_weights() -> None:
    p = Preferences(3, 1, 2)
    assert (p.w_energy, p.w_privacy, p.min_split) == (0.75, 0.25, 2)
    assert (Preferences(0, 5).w_energy, Preferences(0, 5).w_privacy) == (0.0, 1.0)
    assert isinstance(Preferences(np.int64(1), 1).w_energy, float)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_preferences_refuse_a_bad_floor(bad) -> None:
    with pytest.raises(PreferenceError, match=rf"^min_split: expected an integer >= 0, got {bad!r}$".replace("(", r"\(").replace(")", r"\)")):
        Preferences(1, 1, bad)


def test_preferences_accept_a_numpy_floor() -> None:
    assert Preferences(1, 1, np.int64(3)).min_split == 3


def test_encoded_bytes_per_split(m: Manifest) -> None:
    elements = [int(np.prod(m.activation_shape(b))) for b in range(m.n_blocks + 1)]
    assert encoded_bytes(m).tolist() == [4 * e for e in elements]  # float32 by default
    assert encoded_bytes(m, "int8").tolist() == [e + 8 for e in elements]  # + scale and zero point
    with pytest.raises(PreferenceError, match=r"^encoding: expected one of float32, float16, int8, got 'bf16'$"):
        encoded_bytes(m, "bf16")


def test_energy_per_block_by_macs_and_per_split_by_bytes(m: Manifest) -> None:
    e, source = block_energy(m, PI4)
    assert source == "MACs" and e.tolist() == pytest.approx([b.macs * PI4.joules_per_mac for b in m.blocks])
    assert comm_energy(m, WIFI).tolist() == pytest.approx((encoded_bytes(m) * 8 * WIFI.joules_per_bit + WIFI.joules_per_transfer).tolist())
    assert comm_energy(m, WIFI, "int8").tolist() == pytest.approx(
        (encoded_bytes(m, "int8") * 8 * WIFI.joules_per_bit + WIFI.joules_per_transfer).tolist())


def test_privacy_curve_is_clipped_to_0_1(m: Manifest) -> None:
    wild = replace(m, privacy={"curve": [1.5, 1.2, 0.7, -0.2, 0.3, -1.0, 0.0]})
    assert privacy_curve(wild).tolist() == [1.0, 1.0, 0.7, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("curve", [[1.0] * 6, [1.0] * 8, [1.0, math.nan, 1, 1, 1, 1, 1]])
def test_privacy_curve_of_the_wrong_length_is_refused(m: Manifest, curve: list[float]) -> None:
    with pytest.raises(PrivacyNotMeasuredError, match=r"^model 'digits_cnn': privacy.curve must hold 7 finite values$"):
        privacy_curve(replace(m, privacy={"curve": curve}))
    with pytest.raises(PrivacyNotMeasuredError, match=r"the split decision does not assume one$"):
        privacy_curve(replace(m, privacy=None))


def test_decision_reports_what_it_decided_on(m: Manifest) -> None:
    d = decide_split(m, PI4, LTE, Preferences(1, 1, 1, defence_strength=0), encoding="float16", max_split=5)
    assert (d.model_id, d.version, d.device, d.radio, d.encoding, d.max_split) == (m.model_id, m.version, PI4.name, LTE.name, "float16", 5)
    assert d.bytes_sent.tolist() == encoded_bytes(m, "float16", raw_image=True).tolist()
    assert d.e_comm.tolist() == pytest.approx(comm_energy(m, LTE, "float16", raw_image=True).tolist())
    allowed = np.isfinite(d.utility)
    assert allowed.tolist() == [False, True, True, True, True, True, False]
    energy = d.e_comp + d.e_comm
    assert d.energy_norm.tolist() == pytest.approx((energy / energy[allowed].max()).tolist())
    doc = d.to_dict()
    json.dumps(doc)
    assert {k: doc[k] for k in ("model", "version", "device", "radio", "encoding", "w_energy", "w_privacy", "min_split",
                                "max_split", "compute_energy_from", "recommended_split")} == {
        "model": m.model_id, "version": m.version, "device": PI4.name, "radio": LTE.name, "encoding": "float16",
        "w_energy": 0.5, "w_privacy": 0.5, "min_split": 1, "max_split": 5, "compute_energy_from": "MACs",
        "recommended_split": d.recommended}
    rows = doc["splits"]
    assert [r["split"] for r in rows] == list(range(m.n_blocks + 1))
    for b, r in enumerate(rows):
        assert r["bytes"] == int(d.bytes_sent[b]) and r["e_comp_j"] == float(d.e_comp[b]) and r["e_comm_j"] == float(d.e_comm[b])
        assert r["energy_norm"] == float(d.energy_norm[b]) and r["p_priv"] == float(d.p_priv[b])
        assert r["candidate"] is bool(allowed[b])
        assert r["utility"] == (float(d.utility[b]) if allowed[b] else None)


@pytest.mark.parametrize("max_split", [-1, 7])
def test_max_split_out_of_range(m: Manifest, max_split: int) -> None:
    with pytest.raises(PreferenceError, match=rf"^max_split: expected 0\.\.6, got {max_split}$"):
        decide_split(m, PI4, WIFI, Preferences(1, 1), max_split=max_split)
    assert decide_split(m, PI4, WIFI, Preferences(1, 1), max_split=0).recommended == 0


def batch(m: Manifest, **over):
    args = dict(device_index=np.array([0, 0]), radio_index=np.array([0, 1]), w_energy=np.array([1.0, 0.0]),
                w_privacy=np.array([0.0, 1.0]), min_split=np.array([0, 2]))
    args.update(over)
    return decide_splits(m, [PI4], [WIFI, LTE], **args)


def test_batch_weights_are_normalised_per_user(m: Manifest) -> None:
    one = batch(m)
    scaled = batch(m, w_energy=np.array([4.0, 0.0]), w_privacy=np.array([0.0, 7.0]))
    assert one.tolist() == scaled.tolist()
    mixed = batch(m, w_energy=np.array([1.0, 1.0]), w_privacy=np.array([3.0, 3.0]), min_split=np.array([0, 0]))
    by_one = [decide_split(m, PI4, r, Preferences(1, 3)).recommended for r in (WIFI, LTE)]
    assert mixed.tolist() == by_one


@pytest.mark.parametrize(
    "over,message",
    [
        (dict(w_energy=np.array([1.0, -1.0])), r"^w_energy: must be finite and >= 0; user 1 has -1\.0$"),
        (dict(w_privacy=np.array([np.nan, 1.0])), r"^w_privacy: must be finite and >= 0; user 0 has nan$"),
        (dict(w_energy=np.array([1.0, 0.0]), w_privacy=np.array([0.0, 0.0])), r"^w_energy, w_privacy: must not both be 0 \(user 1\)$"),
        (dict(min_split=np.array([0, 7])), r"^min_split: expected integers in 0\.\.6$"),
        (dict(min_split=np.array([-1, 0])), r"^min_split: expected integers in 0\.\.6$"),
        (dict(min_split=np.array([0.0, 1.0])), r"^min_split: expected integers in 0\.\.6$"),
        (dict(device_index=np.array([0, 1])), r"^device_index: expected 0\.\.0$"),
        (dict(device_index=np.array([-1, 0])), r"^device_index: expected 0\.\.0$"),
        (dict(radio_index=np.array([0, 2])), r"^radio_index: expected 0\.\.1$"),
        (dict(radio_index=np.array([-1, 0])), r"^radio_index: expected 0\.\.1$"),
    ],
)
def test_batch_refuses_naming_the_field(m: Manifest, over: dict, message: str) -> None:
    with pytest.raises(PreferenceError, match=message):
        batch(m, **over)
