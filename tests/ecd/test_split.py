"""The ECD split decision (docs/architecture.md, "The split decision") on the bundled model and its measured privacy curve."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cli import ecd

from ecd import zoo
from ecd.manifest import Manifest
from ecd.profiles import UnknownProfileError, known_devices, known_radios, load_device, load_radio
from ecd.split import Preferences, PreferenceError, comm_energy, decide_split, decide_splits, encoded_bytes
from ecd.leakage import DefenceTableError, PrivacyNotMeasuredError, defence_table, privacy_curve, privacy_options

PI4 = load_device("pi4")
WIFI = load_radio("wifi")



def test_recommended_split_never_gets_shallower_as_privacy_weight_rises(bundled: Manifest) -> None:
    """Undefended (strength pinned to 0), the running-minimum curve makes the split monotone."""
    for floor in range(bundled.n_blocks + 1):
        splits = [
            decide_split(bundled, PI4, WIFI, Preferences(1 - w, w, min_split=floor, defence_strength=0)).recommended
            for w in np.linspace(0, 1, 101)
        ]
        assert all(a <= b for a, b in zip(splits, splits[1:])), (floor, splits)
        assert min(splits) >= floor
    # the weights matter: an energy-only user and a privacy-only user get different splits
    energy_only = decide_split(bundled, PI4, WIFI, Preferences(1, 0, defence_strength=0)).recommended
    privacy_only = decide_split(bundled, PI4, WIFI, Preferences(0, 1, defence_strength=0)).recommended
    assert privacy_only > energy_only


@pytest.mark.parametrize("model", ["digits_cnn", "faces_cnn"])
def test_with_the_defence_leakage_never_rises_and_energy_never_falls_with_privacy_weight(model: str) -> None:
    m = zoo.load_manifest(model)
    for radio in (WIFI, load_radio("lte")):
        for floor in range(m.n_blocks + 1):
            picks = []
            for w in np.linspace(0, 1, 51):
                d = decide_split(m, PI4, radio, Preferences(1 - w, w, min_split=floor))
                b = d.recommended
                picks.append((d.p_priv[b], d.e_comp[b] + d.e_comm[b]))
                assert b >= floor
            for (p0, e0), (p1, e1) in zip(picks, picks[1:]):
                assert p1 <= p0 + 1e-12 and e1 >= e0 - 1e-12, (model, floor, picks)


@pytest.mark.parametrize("model", ["digits_cnn", "faces_cnn"])
def test_privacy_weight_one_picks_the_least_leakage_the_floor_and_accuracy_allow(model: str) -> None:
    m = zoo.load_manifest(model)
    table = defence_table(m, required=True)
    options = privacy_options(m)
    defended_picked = 0
    for floor in range(m.n_blocks + 1):
        for hi in range(floor, m.n_blocks + 1):  # a device that cannot run every block has a max_split
            d = decide_split(m, PI4, WIFI, Preferences(0, 1, min_split=floor), max_split=hi)
            b, st = d.recommended, d.recommended_strength
            k = table.check_strength(m.model_id, st)
            least = options.leakage[:, floor : hi + 1].min()
            assert options.leakage[k, b] == least
            assert floor <= b <= hi
            # the chosen setting keeps the task: at most 2 points of accuracy lost (or undefended)
            assert st == 0 or table.baseline_accuracy - table.accuracy[k, b] <= 0.02 + 1e-9
            if least < options.leakage[0, floor : hi + 1].min():
                assert st > 0
                defended_picked += 1
    if model == "faces_cnn":
        # measured: undefended logits leak nothing beyond the label, so the defence wins only where
        # the device must send earlier (e.g. max_split 3: strength 2 at split 3, L 0.069 vs 0.707)
        assert defended_picked > 0
        d = decide_split(m, PI4, WIFI, Preferences(0, 1), max_split=3)
        assert (d.recommended, d.recommended_strength) == (3, 2.0)


def test_batch_decision_returns_the_same_strengths(bundled: Manifest) -> None:
    rng = np.random.default_rng(2)
    users = 60
    w_e, w_p = rng.random(users), rng.random(users)
    floor = rng.integers(0, bundled.n_blocks + 1, users)
    zeros = np.zeros(users, int)
    splits, strengths = decide_splits(bundled, [PI4], [WIFI], zeros, zeros, w_e, w_p, floor, return_strengths=True)
    for u in range(users):
        one = decide_split(bundled, PI4, WIFI, Preferences(w_e[u], w_p[u], int(floor[u])))
        assert (splits[u], strengths[u]) == (one.recommended, one.recommended_strength)


def test_defence_strength_out_of_range_names_the_field() -> None:
    faces = zoo.load_manifest("faces_cnn")
    for bad in (-1.0, float("nan"), float("inf"), "strong"):
        with pytest.raises(PreferenceError, match="^defence_strength"):
            Preferences(0.5, 0.5, defence_strength=bad)
    with pytest.raises(PreferenceError, match="defence_strength: expected one of the measured strengths"):
        decide_split(faces, PI4, WIFI, Preferences(0.5, 0.5, defence_strength=3.0))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(PreferenceError, match="^max_accuracy_loss"):
            Preferences(0.5, 0.5, max_accuracy_loss=bad)
    pinned = decide_split(faces, PI4, WIFI, Preferences(0.5, 0.5, defence_strength=2.0))
    assert pinned.recommended_strength == 2.0
    assert all(pinned.strength_at(b) == 2.0 for b in range(faces.n_blocks + 1))


def _resealed(defence: dict) -> dict:
    import hashlib

    body = {k: v for k, v in defence.items() if k != "sha256"}
    return {**body, "sha256": hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()}


def test_missing_or_tampered_defence_table_names_the_field() -> None:
    import copy

    faces = zoo.load_manifest("faces_cnn")
    bare = replace(faces, privacy={k: v for k, v in faces.privacy.items() if k != "defence"})
    with pytest.raises(DefenceTableError, match="privacy.defence: model 'faces_cnn'.*no measured defence table"):
        decide_split(bare, PI4, WIFI, Preferences(0.5, 0.5, defence_strength=2.0))
    assert decide_split(bare, PI4, WIFI, Preferences(0.5, 0.5)).recommended_strength == 0.0  # none to use

    def with_defence(defence: dict) -> Manifest:
        return replace(faces, privacy={**faces.privacy, "defence": defence})

    edited = copy.deepcopy(faces.privacy["defence"])
    k, b = next((k, b) for k, row in enumerate(edited["table"]["leakage"]) for b, v in enumerate(row) if k and v > 0.1)
    edited["table"]["leakage"][k][b] = 0.0  # a lower leakage than was measured
    with pytest.raises(DefenceTableError, match="privacy.defence.sha256"):
        decide_split(with_defence(edited), PI4, WIFI, Preferences(0, 1))
    edited = copy.deepcopy(faces.privacy["defence"])
    edited["strengths"][1] = 0.1
    with pytest.raises(DefenceTableError, match="privacy.defence.sha256"):
        decide_split(with_defence(edited), PI4, WIFI, Preferences(0, 1))
    for key in ("scale", "table", "sha256"):
        gone = {k: v for k, v in faces.privacy["defence"].items() if k != key}
        with pytest.raises(DefenceTableError, match=f"privacy.defence.{key}: missing"):
            decide_split(with_defence(gone), PI4, WIFI, Preferences(0, 1))
    short = copy.deepcopy(faces.privacy["defence"])
    short["table"]["accuracy"] = short["table"]["accuracy"][:-1]
    with pytest.raises(DefenceTableError, match=r"privacy.defence.table.accuracy: expected shape"):
        decide_split(with_defence(_resealed(short)), PI4, WIFI, Preferences(0, 1))
    above = copy.deepcopy(faces.privacy["defence"])
    above["table"]["leakage"][1][1] = 1.5
    with pytest.raises(DefenceTableError, match=r"privacy.defence.table.leakage: expected finite values in \[0.0, 1.0\]"):
        decide_split(with_defence(_resealed(above)), PI4, WIFI, Preferences(0, 1))
    unsorted = copy.deepcopy(faces.privacy["defence"])
    unsorted["strengths"] = unsorted["strengths"][::-1]
    with pytest.raises(DefenceTableError, match="privacy.defence.strengths"):
        decide_split(with_defence(_resealed(unsorted)), PI4, WIFI, Preferences(0, 1))


def test_device_applies_the_chosen_defence_before_sending() -> None:
    from device_agent.core import AgentCore
    from ecd import codec
    from ecd.manifest import load_heldout
    from ecd.metrics import ServiceMetrics
    from ecd.partition import Partition
    from ecd.types import Assignment, Encoding, Split

    faces = zoo.load_manifest("faces_cnn")
    image = load_heldout(faces).images[0]
    for strength in (0.0, 4.0):
        core = AgentCore("t", Preferences(0, 1, min_split=2, defence_strength=strength), Encoding.FLOAT32, PI4, WIFI,
                         ServiceMetrics("device"))
        split = core.decide(faces)
        core.registered(faces, Assignment("d", "tok", "e:1", faces.model_id, faces.version, Split(split, faces.n_blocks),
                                          split, core.prefs))
        clean = Partition(faces, 0, split).run(faces.input.preprocess(image[None]))
        sent = [codec.decode(core.make_frame(image)[0].tensor, clean.shape[1:], 1 << 24) for _ in range(2)]
        if strength == 0:
            assert np.array_equal(sent[0], clean) and np.array_equal(sent[1], clean)
        else:
            # E|Laplace(0, s)| = s; averaged over enough frames that a split with few values
            # (the logits) still gives a stable estimate (fresh, unseeded noise on every frame)
            noise = np.concatenate([(codec.decode(core.make_frame(image)[0].tensor, clean.shape[1:], 1 << 24) - clean).ravel()
                                    for _ in range(400)])
            scale = strength * defence_table(faces).scale[split]
            assert np.mean(np.abs(noise)) == pytest.approx(scale, rel=0.25)
            assert not np.array_equal(sent[0], sent[1])  # fresh noise per frame


def test_min_split_is_respected_for_every_profile_and_radio(bundled: Manifest) -> None:
    for dev in known_devices():
        for radio in known_radios():
            for floor in range(bundled.n_blocks + 1):
                d = decide_split(bundled, load_device(dev), load_radio(radio), Preferences(0.9, 0.1, floor))
                assert d.recommended >= floor
                assert np.all(np.isinf(d.utility[:floor]))


def test_utility_terms(bundled: Manifest) -> None:
    d = decide_split(bundled, PI4, WIFI, Preferences(3, 1, defence_strength=0))
    assert d.preferences.w_energy == pytest.approx(0.75)
    assert d.e_comp[0] == 0.0
    assert np.all(np.diff(d.e_comp) >= 0)
    assert d.e_comm == pytest.approx(encoded_bytes(bundled, raw_image=True) * 8 * WIFI.joules_per_bit + WIFI.joules_per_transfer)
    assert d.energy_norm.max() == pytest.approx(1.0)
    assert d.p_priv[0] == 1.0
    assert np.all(np.diff(d.p_priv) <= 0)
    assert d.utility[d.recommended] == pytest.approx(np.min(d.utility))
    expected = d.preferences.w_energy * d.energy_norm + d.preferences.w_privacy * d.p_priv
    assert d.utility == pytest.approx(expected)


def test_encodings_change_the_bytes_sent(bundled: Manifest) -> None:
    f32, f16, i8 = (encoded_bytes(bundled, e) for e in ("float32", "float16", "int8"))
    assert np.array_equal(f32, 2 * f16)
    assert np.array_equal(i8, f32 / 4 + 8)
    with pytest.raises(PreferenceError, match="encoding"):
        encoded_bytes(bundled, "bfloat3")


def test_split_0_counts_the_captured_image_unless_a_defence_noises_it() -> None:
    # the agent sends UINT8_IMAGE at split 0 (one byte per value), the normalised input only when noised
    faces = zoo.load_manifest("faces_cnn")
    pixels = int(np.prod(faces.input.shape))
    for encoding in ("float32", "float16", "int8"):
        sent = encoded_bytes(faces, encoding, raw_image=True)
        assert sent[0] == pixels
        assert sent[1:].tolist() == encoded_bytes(faces, encoding)[1:].tolist()
        plain = decide_split(faces, PI4, WIFI, Preferences(0.5, 0.5, defence_strength=0), encoding=encoding)
        assert plain.bytes_sent[0] == pixels
        noised = decide_split(faces, PI4, WIFI, Preferences(0.5, 0.5, defence_strength=2.0), encoding=encoding)
        assert noised.strength_at(0) == 2.0
        assert noised.bytes_sent[0] == encoded_bytes(faces, encoding)[0] > pixels
        assert noised.e_comm[0] > plain.e_comm[0]
        # unpinned: with any accuracy loss allowed, the least-leaking setting at split 0 is noised
        free = decide_split(faces, PI4, WIFI, Preferences(0.5, 0.5, max_accuracy_loss=1.0), encoding=encoding)
        assert free.strength_at(0) > 0 and free.bytes_sent[0] == encoded_bytes(faces, encoding)[0]


def test_a_nan_in_the_similarity_curve_is_refused_even_beside_a_leakage_curve(bundled: Manifest) -> None:
    curve = list(bundled.privacy["curve"])
    curve[6] = float("nan")
    with pytest.raises(PrivacyNotMeasuredError, match="privacy.curve must hold 7 finite values"):
        decide_split(replace(bundled, privacy={**bundled.privacy, "curve": curve}), PI4, WIFI, Preferences(0, 1), max_split=3)


def test_ties_go_to_less_device_energy(bundled: Manifest) -> None:
    flat = replace(bundled, privacy={"curve": [0.5] * (bundled.n_blocks + 1)})
    d = decide_split(flat, PI4, WIFI, Preferences(0, 1))  # every candidate has the same U
    energy = d.e_comp + d.e_comm
    assert d.recommended == int(np.argmin(energy))


def test_privacy_curve_is_monotone_envelope_of_the_measured_one(bundled: Manifest) -> None:
    noisy = replace(bundled, privacy={"curve": [1.0, 0.9, 0.92, 0.5, 0.55, 0.2, 0.1]})
    assert privacy_curve(noisy).tolist() == [1.0, 0.9, 0.9, 0.5, 0.5, 0.2, 0.1]


def test_manifest_without_a_curve_is_refused(bundled: Manifest) -> None:
    bare = replace(bundled, privacy=None)
    with pytest.raises(PrivacyNotMeasuredError, match="ecd models privacy digits_cnn"):
        decide_split(bare, PI4, WIFI, Preferences(0.5, 0.5))
    with pytest.raises(PrivacyNotMeasuredError):
        decide_splits(bare, [PI4], [WIFI], np.zeros(1, int), np.zeros(1, int), np.ones(1), np.ones(1), np.zeros(1, int))


@pytest.mark.parametrize(
    "w_energy,w_privacy,field",
    [
        (float("nan"), 0.5, "w_energy"),
        (0.5, float("nan"), "w_privacy"),
        (-0.1, 0.5, "w_energy"),
        (0.5, -1, "w_privacy"),
        (float("inf"), 0.5, "w_energy"),
        (0, 0, "w_energy, w_privacy"),
        ("a lot", 0.5, "w_energy"),
    ],
)
def test_invalid_weights_name_the_field(w_energy: float, w_privacy: float, field: str) -> None:
    with pytest.raises(PreferenceError) as e:
        Preferences(w_energy, w_privacy)
    assert str(e.value).startswith(field)
    assert isinstance(e.value, ValueError)


def test_min_split_out_of_range(bundled: Manifest) -> None:
    with pytest.raises(PreferenceError, match="min_split"):
        Preferences(0.5, 0.5, min_split=-1)
    with pytest.raises(PreferenceError, match="min_split: expected 0..6"):
        decide_split(bundled, PI4, WIFI, Preferences(0.5, 0.5, min_split=7))
    with pytest.raises(PreferenceError, match="min_split: expected 0..3"):
        decide_split(bundled, PI4, WIFI, Preferences(0.5, 0.5, min_split=5), max_split=3)


def test_unknown_profile_and_radio() -> None:
    with pytest.raises(UnknownProfileError, match="pi9.*pi4"):
        load_device("pi9")
    with pytest.raises(UnknownProfileError, match="lora.*wifi"):
        load_radio("lora")
    assert isinstance(UnknownProfileError("x"), ValueError)


def test_batch_decision_equals_one_by_one(bundled: Manifest) -> None:
    rng = np.random.default_rng(1)
    devices = [load_device(n) for n in known_devices()]
    radios = [load_radio(n) for n in known_radios()]
    users = 300
    dev = rng.integers(0, len(devices), users)
    rad = rng.integers(0, len(radios), users)
    w_e, w_p = rng.random(users), rng.random(users)
    floor = rng.integers(0, bundled.n_blocks + 1, users)
    batch = decide_splits(bundled, devices, radios, dev, rad, w_e, w_p, floor)
    for u in range(users):
        one = decide_split(bundled, devices[dev[u]], radios[rad[u]], Preferences(w_e[u], w_p[u], int(floor[u])))
        assert batch[u] == one.recommended, u


def test_batch_rejects_bad_rows(bundled: Manifest) -> None:
    args = dict(device_index=np.zeros(3, int), radio_index=np.zeros(3, int), min_split=np.zeros(3, int))
    with pytest.raises(PreferenceError, match="w_privacy.*user 1"):
        decide_splits(bundled, [PI4], [WIFI], w_energy=np.ones(3), w_privacy=np.array([0.1, np.nan, 0.2]), **args)
    with pytest.raises(PreferenceError, match="not both be 0"):
        decide_splits(bundled, [PI4], [WIFI], w_energy=np.zeros(3), w_privacy=np.zeros(3), **args)


def test_measured_latency_replaces_the_mac_estimate(bundled: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "here.toml"
    proc = ecd("profile", "--model", "digits_cnn", "--like", "pi4", "--runs", "5", "--warmup", "1", "--name", "ci-host", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    profile = load_device(out)
    assert profile.name == "ci-host"
    assert len(profile.measured["digits_cnn"].block_latency_s) == bundled.n_blocks
    assert all(v > 0 for v in profile.measured["digits_cnn"].block_latency_s)
    d = decide_split(bundled, profile, WIFI, Preferences(0.5, 0.5))
    assert d.compute_source == "measured"
    expected = np.concatenate([[0], np.cumsum(profile.measured["digits_cnn"].block_latency_s)]) * profile.cpu_active_w
    assert d.e_comp == pytest.approx(expected)
    proc = ecd("split", "--profile", str(out), "--radio", "wifi", "--privacy-weight", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["compute_energy_from"] == "measured"


def test_stale_measurement_falls_back_to_macs(bundled: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "stale.toml"
    assert ecd("profile", "--like", "pi4", "--runs", "2", "--out", str(out)).returncode == 0
    out.write_text(out.read_text().replace(bundled.version, "0000000000000000"))
    assert decide_split(bundled, load_device(out), WIFI, Preferences(1, 1)).compute_source == "MACs"


def test_split_cli_table_json_and_plot(tmp_path: Path) -> None:
    proc = ecd("split", "--profile", "pi4", "--radio", "wifi", "--w-privacy", "0.8", "--min-split", "2")
    assert proc.returncode == 0, proc.stderr
    assert "recommended split" in proc.stdout and "(floor)" in proc.stdout
    plot = tmp_path / "split.png"
    proc = ecd("split", "--profile", "phone_midrange", "--radio", "lte", "--privacy-weight", "0.3", "--json", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["device"] == "phone_midrange" and d["radio"] == "lte"
    assert len(d["splits"]) == 7
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--privacy-weight", "nan"], "--w-privacy"),
        (["--privacy-weight", "nan", "--energy-weight", "1"], "w_privacy"),
        (["--w-privacy", "-0.5"], "--w-privacy"),
        (["--privacy-weight", "0", "--energy-weight", "0"], "not both be 0"),
        (["--privacy-weight", "0.5", "--energy-weight", "-1"], "w_energy"),
        (["--privacy-weight", "0.5", "--min-split", "9"], "min_split"),
        (["--privacy-weight", "0.5", "--profile", "pi9"], "pi9"),
        (["--privacy-weight", "0.5", "--radio", "lora"], "lora"),
        (["--privacy-weight", "0.5", "--model", "faces_cnn", "--defence-strength", "3"], "defence_strength"),
        (["--privacy-weight", "0.5", "--defence-strength", "-1"], "defence_strength"),
        (["--privacy-weight", "0.5", "--max-accuracy-loss", "2"], "max_accuracy_loss"),
    ],
)
def test_split_cli_bad_input(args: list[str], needle: str) -> None:
    base = {"--profile": "pi4", "--radio": "wifi"}
    for i in range(0, len(args), 2):
        base.pop(args[i], None)
    flat = [x for kv in base.items() for x in kv]
    proc = ecd("split", *flat, *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_comm_energy_grows_with_bytes(bundled: Manifest) -> None:
    lte = load_radio("lte")
    e = comm_energy(bundled, lte)
    order = np.argsort(encoded_bytes(bundled))
    assert np.all(np.diff(e[order]) >= 0)
