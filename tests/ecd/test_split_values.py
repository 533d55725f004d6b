"""The split decision's values on hand-made inputs, and the batch decision against the one-user one
for every argument (issue 19: the mutation gate found arguments the batch path could drop unseen).

``choose_splits`` is checked on small matrices whose answers are worked out by hand in the comments.
The privacy term the decision rests on (ecd/leakage.py) is ``test_leakage_values.py``'s.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from ecd import zoo
from ecd.manifest import Manifest
from ecd.profiles import known_radios, load_device, load_radio
from ecd.split import Preferences, PreferenceError, choose_splits, decide_split, decide_splits
from ecd.leakage import privacy_options

PI4 = load_device("pi4")
WIFI = load_radio("wifi")


LTE = load_radio("lte")


def one_user(energy, p, w_e, w_p, floor=0, hi=None):
    energy = np.asarray([energy], dtype=np.float64)
    hi = energy.shape[1] - 1 if hi is None else hi
    chosen, utility = choose_splits(energy, np.asarray(p, dtype=np.float64), np.array([w_e]), np.array([w_p]),
                                    np.array([floor]), hi)
    return int(chosen[0]), utility[0]


def test_ties_in_u_go_to_the_lower_similarity_before_less_energy() -> None:
    # w_privacy = 1: U = p = [0.5, 0, 0, 0]; splits 1..3 tie; similarity 0.4, 0.2, 0.3 -> split 2,
    # though split 1 costs less energy; equal similarity -> less energy, then the deeper split
    energy = np.array([[1.0, 2.0, 5.0, 3.0]])
    p = np.array([0.5, 0.0, 0.0, 0.0])
    args = (np.array([0.0]), np.array([1.0]), np.array([0]), 3)
    assert choose_splits(energy, p, *args, np.array([0.9, 0.4, 0.2, 0.3]))[0].tolist() == [2]
    assert choose_splits(energy, p, *args, np.array([0.9, 0.3, 0.3, 0.3]))[0].tolist() == [1]
    assert choose_splits(energy, p, *args)[0].tolist() == [1]
    assert choose_splits(np.array([[1.0, 2.0, 5.0, 2.0]]), p, *args, np.array([0.9, 0.3, 0.4, 0.3]))[0].tolist() == [3]


def test_ties_are_broken_over_every_strength_and_split_together(m: Manifest) -> None:
    """With any accuracy loss allowed, privacy weight 1 takes the least similar of all the settings
    whose leakage is the least, whatever strength or split it is at."""
    options = privacy_options(m, max_accuracy_loss=1.0)
    least = options.leakage == options.leakage.min()
    d = decide_split(m, PI4, WIFI, Preferences(0, 1, max_accuracy_loss=1.0))
    k = int(np.flatnonzero(options.strengths == d.recommended_strength)[0])
    assert least[k, d.recommended]
    assert options.similarity[k, d.recommended] == options.similarity[least].min()


def test_faces_privacy_weight_one_meets_issue_17s_targets() -> None:
    """The committed faces table: what privacy weight 1 picks (floor 0) is unrecognisable to both
    adaptive attacks (SSIM < 0.3), not matched to its person (<= chance + 10 points), and costs at
    most 2 points of accuracy."""
    faces = zoo.load_manifest("faces_cnn")
    d = faces.privacy["defence"]
    t, k = d["table"], d["strengths"]
    for radio, floor in itertools.product([load_radio(r) for r in known_radios()], range(faces.n_blocks)):
        got = decide_split(faces, PI4, radio, Preferences(0, 1, min_split=floor))
        i, b = k.index(got.recommended_strength), got.recommended
        assert max(t["whitebox_ssim"][i][b], t["decoder_ssim"][i][b]) < 0.3
        assert max(t["whitebox_identity_match"][i][b], t["decoder_identity_match"][i][b]) <= d["identity_match_chance"] + 0.1
        assert d["baseline_accuracy"] - t["accuracy"][i][b] <= 0.02


def test_energy_is_normalised_over_the_candidates_only() -> None:
    # candidates 1..3: e_max = 8, Ê = [-, 1/8, 5/8, 1]; U = 0.9·Ê + 0.1·p = [inf, 0.1625, 0.5825, 0.9]
    split, utility = one_user([10, 1, 5, 8], [1.0, 0.5, 0.2, 0.0], 0.9, 0.1, floor=1)
    assert split == 1
    assert utility[0] == np.inf and utility[1:] == pytest.approx([0.1625, 0.5825, 0.9])
    # candidates 0..2 (max_split 2): e_max = 10
    split, utility = one_user([10, 1, 5, 8], [1.0, 0.5, 0.2, 0.0], 0.9, 0.1, hi=2)
    assert split == 1 and utility[:3] == pytest.approx([1.0, 0.14, 0.47]) and utility[3] == np.inf


def test_a_device_that_spends_nothing_is_judged_on_privacy_alone() -> None:
    # every candidate costs 0 J: Ê = 0, U = p; splits 1 and 2 tie on U and on energy: the deeper
    split, utility = one_user([0, 0, 0, 0], [1.0, 0.5, 0.5, 0.9], 0.5, 0.5)
    assert split == 2 and utility == pytest.approx([0.5, 0.25, 0.25, 0.45])


def test_a_tie_on_energy_outside_the_best_utility_does_not_count() -> None:
    # U = [0.5, 1.0]: split 0 is best; split 1 costs the same energy but is no tie on U
    split, _ = one_user([1, 1], [0.0, 1.0], 0.5, 0.5)
    assert split == 0


def test_a_decision_without_a_defence_reports_strength_zero_everywhere(m: Manifest) -> None:
    d = decide_split(m, PI4, WIFI, Preferences(1, 1))
    plain = dataclasses.replace(d, strength_per_split=None)  # as built before defence tables existed
    assert [plain.strength_at(b) for b in range(m.n_blocks + 1)] == [0.0] * (m.n_blocks + 1)
    assert [row["defence_strength"] for row in plain.to_dict()["splits"]] == [0.0] * (m.n_blocks + 1)


def test_to_dict_names_every_field(m: Manifest) -> None:
    d = decide_split(m, PI4, WIFI, Preferences(0, 1, max_accuracy_loss=1.0))
    out = d.to_dict()
    assert set(out) == {
        "model", "version", "device", "radio", "encoding", "w_energy", "w_privacy", "min_split", "max_split",
        "compute_energy_from", "recommended_split", "recommended_defence_strength", "max_accuracy_loss",
        "privacy_term", "defence_strengths", "splits",
    }
    # measured: with any accuracy loss allowed, several settings leak nothing beyond the label, and the
    # least similar of them over every (strength, split) (the tie-break) is noise of strength 8
    assert out["recommended_defence_strength"] == d.recommended_strength == 8.0
    assert out["max_accuracy_loss"] == 1.0
    assert out["privacy_term"] == "leakage beyond the label, with the defence table"
    assert out["defence_strengths"] == [0.0, 1.0, 4.0, 8.0]
    rows = out["splits"]
    assert set(rows[0]) == {"split", "bytes", "e_comp_j", "e_comm_j", "energy_norm", "p_priv", "defence_strength",
                            "utility", "candidate"}
    assert rows[d.recommended]["defence_strength"] == 8.0


def batch(m: Manifest, users: list[tuple[float, float, int]], radio=WIFI, **kw):
    w_e = np.array([u[0] for u in users], dtype=np.float64)
    w_p = np.array([u[1] for u in users], dtype=np.float64)
    floor = np.array([u[2] for u in users])
    zeros = np.zeros(len(users), dtype=int)
    return decide_splits(m, [PI4], [radio], zeros, zeros, w_e, w_p, floor, **kw)


USERS = [(1 - w, w, floor) for w in (0.0, 0.2, 0.5, 0.8, 1.0) for floor in (0, 2)]


def one_by_one(m: Manifest, radio=WIFI, encoding="float32", max_split=None, loss=0.02):
    return [decide_split(m, PI4, radio, Preferences(e, p, f, max_accuracy_loss=loss), encoding=encoding, max_split=max_split)
            for e, p, f in USERS]


def test_batch_uses_the_encoding(m: Manifest) -> None:
    got = batch(m, USERS, encoding="int8").tolist()
    assert got == [d.recommended for d in one_by_one(m, encoding="int8")]
    assert got != batch(m, USERS).tolist()  # int8 changes some user's split on WiFi


def test_batch_uses_max_split(m: Manifest) -> None:
    for hi in (3, 5):
        got = batch(m, USERS, max_split=hi).tolist()
        assert got == [d.recommended for d in one_by_one(m, max_split=hi)]
        assert max(got) == hi  # some user would go deeper without the cap


def test_batch_uses_max_accuracy_loss(m: Manifest) -> None:
    for loss in (0.0, 1.0):
        splits, strengths = batch(m, USERS, max_accuracy_loss=loss, return_strengths=True)
        ones = one_by_one(m, loss=loss)
        assert splits.tolist() == [d.recommended for d in ones]
        assert strengths.tolist() == [d.recommended_strength for d in ones]
    _, strict = batch(m, USERS, max_accuracy_loss=0.0, return_strengths=True)
    _, lax = batch(m, USERS, max_accuracy_loss=1.0, return_strengths=True)
    assert strict.tolist() != lax.tolist()


@pytest.mark.parametrize("loss", [0.0, 1.0])
def test_batch_accepts_the_ends_of_max_accuracy_loss(m: Manifest, loss: float) -> None:
    assert len(batch(m, USERS, max_accuracy_loss=loss)) == len(USERS)


@pytest.mark.parametrize("loss", [-0.01, 1.5, 2.0, float("nan"), float("inf")])
def test_batch_refuses_a_bad_max_accuracy_loss(m: Manifest, loss: float) -> None:
    with pytest.raises(PreferenceError, match=rf"^max_accuracy_loss: expected a number in \[0, 1\], got {loss!r}$"):
        batch(m, USERS, max_accuracy_loss=loss)


def test_batch_names_a_bad_integer_weight_as_a_number(m: Manifest) -> None:
    """Integer weights (as a JSON config gives them) are read as numbers: the message shows -2.0."""
    zeros = np.zeros(2, dtype=int)
    with pytest.raises(PreferenceError, match=r"^w_energy: must be finite and >= 0; user 1 has -2\.0$"):
        decide_splits(m, [PI4], [WIFI], zeros, zeros, [1, -2], [1, 1], zeros)
    with pytest.raises(PreferenceError, match=r"^w_privacy: must be finite and >= 0; user 0 has -3\.0$"):
        decide_splits(m, [PI4], [WIFI], zeros, zeros, [1, 1], [-3, 1], zeros)


def test_energy_is_normalised_by_the_largest_candidate_not_the_largest_split(m: Manifest) -> None:
    outside = 0
    for floor in range(m.n_blocks + 1):
        for hi in range(floor, m.n_blocks + 1):
            d = decide_split(m, PI4, WIFI, Preferences(1, 1, floor), max_split=hi)
            energy = d.e_comp + d.e_comm
            candidates = energy[floor : hi + 1]
            assert d.energy_norm.tolist() == pytest.approx((energy / candidates.max()).tolist())
            assert d.energy_norm[floor : hi + 1].max() == pytest.approx(1.0)
            outside += energy.max() > candidates.max()
    assert outside  # some ranges leave out the split that costs most


def test_a_free_device_on_a_free_radio_is_judged_on_privacy_alone(m: Manifest) -> None:
    from ecd.profiles import RadioProfile

    free = dataclasses.replace(PI4, name="free", cpu_idle_w=0.0, cpu_active_w=0.0, joules_per_mac=0.0, measured={})
    silent = RadioProfile(name="silent", description="", joules_per_bit=0.0, joules_per_transfer=0.0, uplink_mbps=1.0)
    d = decide_split(m, free, silent, Preferences(1, 1, defence_strength=0))
    assert d.energy_norm.tolist() == [0.0] * (m.n_blocks + 1)  # 0 J over a 0 J maximum: 0, not nan
    assert d.recommended == int(np.flatnonzero(d.p_priv == d.p_priv.min())[-1])  # the least leakage, deepest on ties


def test_when_the_candidates_cost_nothing_the_other_splits_keep_their_joules(m: Manifest) -> None:
    from ecd.profiles import RadioProfile

    silent = RadioProfile(name="silent", description="", joules_per_bit=0.0, joules_per_transfer=0.0, uplink_mbps=1.0)
    d = decide_split(m, PI4, silent, Preferences(1, 1), max_split=0)  # split 0 sends for free and computes nothing
    assert d.energy_norm[0] == 0.0
    assert d.energy_norm.tolist() == (d.e_comp + d.e_comm).tolist()  # E / 1 where the candidates' maximum is 0


def test_a_decision_keeps_the_leakage_of_every_allowed_setting(m: Manifest) -> None:
    prefs = Preferences(1, 1, max_accuracy_loss=0.5)
    d = decide_split(m, PI4, WIFI, prefs)
    expected = privacy_options(m, 0.5).leakage
    assert d.options is not None and d.options.shape == expected.shape
    assert np.array_equal(d.options, expected)


def test_a_floor_above_max_split_names_the_model_and_its_blocks(m: Manifest) -> None:
    with pytest.raises(PreferenceError, match=r"^min_split: expected 0\.\.3 for digits_cnn \(6 blocks\), got 5$"):
        decide_split(m, PI4, WIFI, Preferences(0.5, 0.5, min_split=5), max_split=3)


def test_weights_whose_sum_overflows_are_refused_naming_both() -> None:
    with pytest.raises(PreferenceError, match=r"^w_energy, w_privacy: their sum must be finite, got 1e\+308 \+ 1e\+308$"):
        Preferences(1e308, 1e308)


@pytest.mark.parametrize("loss", [True, "0.1", None])
def test_a_max_accuracy_loss_that_is_no_number_is_refused(loss) -> None:
    with pytest.raises(PreferenceError, match=rf"^max_accuracy_loss: expected a number in \[0, 1\], got {loss!r}$"):
        Preferences(0.5, 0.5, max_accuracy_loss=loss)
