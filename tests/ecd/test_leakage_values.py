"""The privacy term the split decision uses (ecd/leakage.py) on hand-made inputs: the leakage beyond the
label where measured, the undefended curve and its fallback, the defence table (every refusal names its
field) and the defence settings a preference allows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecd.manifest import Manifest
from ecd.split import PreferenceError
from ecd.leakage import DefenceTable, DefenceTableError, PrivacyNotMeasuredError, defence_table, leakage_curve, privacy_curve, privacy_options


def test_the_leakage_beyond_the_label_is_used_where_measured(m: Manifest) -> None:
    values, source = leakage_curve(m)
    assert source == "leakage beyond the label"
    raw = np.clip(np.asarray(m.privacy["leakage"], dtype=np.float64), 0, 1)
    assert values.tolist() == np.minimum.accumulate(raw).tolist()
    assert not np.allclose(values, privacy_curve(m))  # the two curves differ on this model
    assert privacy_options(m).source == "leakage beyond the label, with the defence table"


@pytest.mark.parametrize("key", ["curve", "leakage"])
def test_a_null_in_a_measured_curve_is_refused_naming_it(m: Manifest, key: str) -> None:
    privacy = dict(m.privacy)
    privacy[key] = [None, *privacy[key][1:]]  # JSON null: a value that was never measured
    broken = dataclasses.replace(m, privacy=privacy)
    with pytest.raises(PrivacyNotMeasuredError, match=rf"privacy\.{key} must hold {m.n_blocks + 1} finite values"):
        (privacy_curve if key == "curve" else leakage_curve)(broken)


def test_only_measured_defence_strengths_are_accepted(m: Manifest) -> None:
    table = defence_table(m)
    assert isinstance(table, DefenceTable) and table.strengths.tolist() == [0.0, 1.0, 4.0, 8.0]
    assert table.check_strength(m.model_id, 4.0) == 2
    assert table.check_strength(m.model_id, 4.0 + 5e-10) == 2  # float noise of a value read back from JSON
    for near in (4.0 + 5e-9, 4.0 + 2e-5, 8.0 - 4e-5):  # not measured: refused however close
        with pytest.raises(PreferenceError, match=r"^defence_strength: expected one of the measured strengths"):
            table.check_strength(m.model_id, near)


def _resealed(defence: dict) -> dict:
    """``defence`` with its sha256 recomputed, as if it had been measured so: only the checks that follow
    the digest can refuse it."""
    import hashlib
    import json

    body = {k: v for k, v in defence.items() if k != "sha256"}
    return {**body, "sha256": hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()}


def _with_defence(m: Manifest, defence) -> Manifest:
    return dataclasses.replace(m, privacy={**m.privacy, "defence": defence})


def _edited(m: Manifest, change) -> Manifest:
    import copy

    d = copy.deepcopy(m.privacy["defence"])
    change(d)
    return _with_defence(m, _resealed(d))


def _set(*path_and_value):
    *path, key, value = path_and_value

    def change(d: dict) -> None:
        for p in path:
            d = d[p]
        d[key] = value
    return change


def _set_cell(key: str, row: int, col: int, value):
    def change(d: dict) -> None:
        d["table"][key][row][col] = value
    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (_set("kind", "gaussian"), "privacy.defence.kind: expected one of laplace_noise, learned, got 'gaussian'"),
        (_set("table", [1, 2]), "privacy.defence.table: expected an object in the manifest of 'digits_cnn'"),
        (lambda d: d["table"].pop("leakage"), "privacy.defence.table.leakage: missing in the manifest of 'digits_cnn'"),
        (_set("strengths", "0, 1, 4, 8"), "privacy.defence.strengths: expected a non-empty list of finite numbers"),
        (_set("strengths", []), "privacy.defence.strengths: expected a non-empty list of finite numbers"),
        (_set("strengths", [[0.0, 1.0, 4.0, 8.0]]), "privacy.defence.strengths: expected a non-empty list of finite numbers"),
        (_set("strengths", [0.0, None, 4.0, 8.0]), "privacy.defence.strengths: expected a non-empty list of finite numbers"),
        (_set("strengths", [0.0, 1.0, 4.0, float("inf")]), "privacy.defence.strengths: expected a non-empty list of finite numbers"),
        (_set("strengths", [1.0, 2.0, 4.0, 8.0]), "privacy.defence.strengths: expected 0 first, then increasing"),
        (_set("strengths", [0.0, 4.0, 1.0, 8.0]), "privacy.defence.strengths: expected 0 first, then increasing"),
        (_set("strengths", [0.0, 1.0, 1.0, 8.0]), "privacy.defence.strengths: expected 0 first, then increasing"),
        (_set("scale", [1.0] * 6), "privacy.defence.scale: expected shape [7], got [6]"),
        (_set("scale", ["x"] * 7), "privacy.defence.scale: expected numbers"),
        (_set("scale", [1.0] * 6 + [-0.5]), "privacy.defence.scale: expected finite values in [0.0, inf]"),
        (_set_cell("leakage", 1, 2, None), "privacy.defence.table.leakage: expected finite values in [0.0, 1.0]"),
        (_set_cell("accuracy", 1, 2, 1.5), "privacy.defence.table.accuracy: expected finite values in [0.0, 1.0]"),
        (_set_cell("whitebox_ssim", 1, 2, 1.5), "privacy.defence.table.whitebox_ssim: expected finite values in [-1.0, 1.0]"),
        (_set_cell("whitebox_ssim", 0, 0, -1.5), "privacy.defence.table.whitebox_ssim: expected finite values in [-1.0, 1.0]"),
        (_set_cell("decoder_ssim", 1, 2, 1.5), "privacy.defence.table.decoder_ssim: expected finite values in [-1.0, 1.0]"),
        (_set_cell("decoder_ssim", 0, 0, -1.5), "privacy.defence.table.decoder_ssim: expected finite values in [-1.0, 1.0]"),
        (_set("baseline_accuracy", 1.5), "privacy.defence.baseline_accuracy: expected finite values in [0.0, 1.0]"),
        (_set("baseline_accuracy", "high"), "privacy.defence.baseline_accuracy: expected numbers"),
    ],
)
def test_a_malformed_defence_table_is_refused_naming_the_field(m: Manifest, change, message: str) -> None:
    import re

    with pytest.raises(DefenceTableError, match=f"^{re.escape(message)}$"):
        defence_table(_edited(m, change))


def test_a_defence_that_is_no_object_is_refused(m: Manifest) -> None:
    with pytest.raises(DefenceTableError, match=r"^privacy\.defence: expected an object in the manifest of 'digits_cnn'$"):
        defence_table(_with_defence(m, "laplace"))


def test_the_defence_table_read_back(m: Manifest) -> None:
    t = defence_table(m)
    assert t.kind == "laplace_noise" and t.baseline_accuracy == 0.9972
    assert t.scale.tolist() == m.privacy["defence"]["scale"]
    assert t.leakage.tolist() == m.privacy["defence"]["table"]["leakage"]


def test_an_undefended_only_table_is_accepted(m: Manifest) -> None:
    def only_zero(d: dict) -> None:
        d["strengths"] = [0.0]
        for key in ("leakage", "accuracy", "whitebox_ssim", "decoder_ssim"):
            d["table"][key] = d["table"][key][:1]
    t = defence_table(_edited(m, only_zero))
    assert t.strengths.tolist() == [0.0] and t.leakage.shape == (1, m.n_blocks + 1)


def test_without_a_table_nothing_is_required_unless_a_strength_is_pinned(m: Manifest) -> None:
    bare = dataclasses.replace(m, privacy={k: v for k, v in m.privacy.items() if k != "defence"})
    assert defence_table(bare) is None
    for none in (None, 0, 0.0):  # undefended: no table needed
        options = privacy_options(bare, defence_strength=none)
        assert options.strengths.tolist() == [0.0] and options.source == "leakage beyond the label"
    for pinned in (0.5, 1.0, 2.0):
        with pytest.raises(DefenceTableError, match=rf"^privacy\.defence: model 'digits_cnn' \(version {m.version}\) has no measured defence table"):
            privacy_options(bare, defence_strength=pinned)
    with pytest.raises(DefenceTableError, match=r"^privacy\.defence: missing in the manifest of 'digits_cnn'$"):
        privacy_options(bare, defence_strength=-1.0)  # no strength but 0 can be used without a table


def _leakage(m: Manifest, values) -> Manifest:
    return dataclasses.replace(m, privacy={**m.privacy, "leakage": values})


def test_the_leakage_curve_is_clipped_to_0_1(m: Manifest) -> None:
    values, _ = leakage_curve(_leakage(m, [1.2, 0.9, 0.95, -0.1, 0.3, 0.2, 0.1]))
    assert values.tolist() == [1.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0]


def test_a_leakage_curve_of_the_wrong_length_is_refused(m: Manifest) -> None:
    with pytest.raises(PrivacyNotMeasuredError, match=r"^model 'digits_cnn': privacy\.leakage must hold 7 finite values$"):
        leakage_curve(_leakage(m, [0.5] * 6))


def test_an_older_manifest_falls_back_to_the_similarity_curve(m: Manifest) -> None:
    older = dataclasses.replace(m, privacy={k: v for k, v in m.privacy.items() if k not in ("leakage", "defence")})
    values, source = leakage_curve(older)
    assert source == "similarity" and values.tolist() == privacy_curve(m).tolist()


def test_an_unmeasured_pinned_strength_names_the_model(m: Manifest) -> None:
    with pytest.raises(PreferenceError, match=r"^defence_strength: expected one of the measured strengths "
                                              r"\[0\.0, 1\.0, 4\.0, 8\.0\] for digits_cnn, got 3\.0$"):
        privacy_options(m, defence_strength=3.0)


def test_the_undefended_row_is_the_larger_of_both_measurements_as_a_running_minimum(m: Manifest) -> None:
    table = defence_table(m)
    undefended, _ = leakage_curve(m)
    row = privacy_options(m, 1.0).leakage[0]
    expected = np.minimum.accumulate(np.maximum(np.asarray(m.privacy["defence"]["table"]["leakage"][0]), undefended))
    assert row.tolist() == expected.tolist()
    assert not np.array_equal(table.leakage[0], table.leakage[1])  # the rows differ: the right one is used


def test_a_defence_costing_exactly_the_allowed_loss_is_allowed(m: Manifest) -> None:
    def accuracy(d: dict) -> None:
        d["baseline_accuracy"] = 1.0
        d["table"]["accuracy"] = [[1.0] * 7, [0.75] * 7, [0.5] * 7, [0.25] * 7]  # losses 0, 0.25, 0.5, 0.75
    edited = _edited(m, accuracy)
    at_the_limit = privacy_options(edited, 0.25 - 1e-9)  # within the 1e-9 float slack of a 0.25 loss
    assert np.isfinite(at_the_limit.leakage[:2]).all() and not np.isfinite(at_the_limit.leakage[2:]).any()
    below = privacy_options(edited, 0.25 - 2e-9)
    assert np.isfinite(below.leakage[0]).all() and not np.isfinite(below.leakage[1:]).any()
