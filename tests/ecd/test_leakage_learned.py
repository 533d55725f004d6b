"""The learned privacy levels (issue 35) as the runtime reads them: the bundled ``orl_faces_cnn`` table is
the measured one, a privacy weight maps to a (split, level) through that table (checked against the
table here, not against constants), each level runs as its own model, and an edited or malformed table
is refused naming its field."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ecd import zoo
from ecd.leakage import (
    DefenceTableError,
    check_level,
    defence_digest,
    defence_table,
    level_model,
    privacy_options,
    protection,
)
from ecd.manifest import Manifest
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split
from models.orl_bundle import level_rows, model_id

ROOT = Path(__file__).resolve().parents[2]
RUN = json.loads((ROOT / "docs" / "privacy_orl_nopeek.json").read_text())  # the measured run (docs/explanation/adaptive-privacy.md)
WEIGHTS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


@pytest.fixture(scope="module")
def family() -> Manifest:
    return zoo.load_manifest("orl_faces_cnn")


def test_the_bundled_table_is_the_measured_run(family: Manifest) -> None:
    table = defence_table(family)
    rows = level_rows(RUN)
    assert table.learned and table.models == tuple(model_id(lv) for lv in range(4))
    assert table.strengths.tolist() == [0.0, 1.0, 2.0, 3.0]
    for level in range(4):
        assert table.leakage[level].tolist() == rows[level]["leakage"]
        assert table.reid_top1[level].tolist() == rows[level]["reid_top1"]
        assert table.similarity[level].tolist() == rows[level]["decoder_ssim"]
        # the worst re-identification over the three attacks and every k, as measured per cell
        for b in RUN["splits"]:
            cell = next(c for c in RUN["cells"] if c["level"] == level and c["split"] == b)
            assert table.reid_top1[level, b] == round(max(max(cell[a]["top1"]) for a in ("decoder", "matcher", "linear_probe")), 4)
    assert table.baseline_accuracy == RUN["levels"][0]["accuracy"]
    # each level's own manifest carries its row, and runs its own weights (another version)
    versions = {family.version}
    for level in (1, 2, 3):
        m = zoo.load_manifest(model_id(level))
        assert m.privacy["leakage"] == rows[level]["leakage"] and m.privacy["privacy_level"]["level"] == level
        assert m.training["privacy_level"] == level and m.n_blocks == family.n_blocks
        versions.add(m.version)
    assert len(versions) == 4


def _cells(family: Manifest, max_accuracy_loss: float, max_split: int) -> dict[tuple[int, int], float]:
    """Every (level, split) a user may take, with its privacy term, straight from the manifest's table."""
    t = family.privacy["defence"]
    base = t["baseline_accuracy"]
    undefended = np.minimum.accumulate(np.asarray(family.privacy["leakage"]))
    out = {}
    for level, row in enumerate(t["table"]["leakage"]):
        if level and base - t["table"]["accuracy"][level][0] > max_accuracy_loss + 1e-9:
            continue
        # each level is one model: as for the undefended curve, a deeper split leaks no more than an earlier one
        row = np.minimum.accumulate(np.maximum(row, undefended) if level == 0 else row)
        for b in range(max_split + 1):
            out[(level, b)] = row[b]
    return out


@pytest.mark.parametrize("max_accuracy_loss", [0.02, 0.03])
@pytest.mark.parametrize("max_split", [6, 5, 4])
def test_the_privacy_weight_maps_to_a_split_and_level_through_the_measured_table(
        family: Manifest, max_accuracy_loss: float, max_split: int) -> None:
    device, radio = load_device("pi4"), load_radio("wifi")
    cells = _cells(family, max_accuracy_loss, max_split)
    leakages = []
    for w in WEIGHTS:
        d = decide_split(family, device, radio, Preferences(1 - w, w, max_accuracy_loss=max_accuracy_loss), max_split=max_split)
        b, level = d.recommended, int(d.strength_at(d.recommended))
        assert (level, b) in cells  # never a level the accuracy rule excludes, never above max_split
        # at its split the level taken is the least leakage among the allowed levels
        assert cells[(level, b)] == min(v for (lv, s), v in cells.items() if s == b)
        assert d.p_priv[b] == pytest.approx(cells[(level, b)])
        leakages.append(cells[(level, b)])
        if w == 1.0:  # privacy alone: the least leakage anywhere in the allowed table
            assert cells[(level, b)] == min(cells.values())
        if w == 0.0:  # energy alone: the least device energy
            energy = d.e_comp + d.e_comm
            assert energy[b] == pytest.approx(min(energy[: max_split + 1]))
        assert level_model(family, d.strength_at(b)) == (model_id(level), level)
    assert leakages == sorted(leakages, reverse=True)  # more privacy weight never leaks more


def test_a_level_costing_more_accuracy_than_allowed_is_not_offered(family: Manifest) -> None:
    t = defence_table(family)
    loss = t.baseline_accuracy - t.accuracy[:, 0]
    costly = [lv for lv in range(4) if loss[lv] > 0.02]
    assert costly  # level 3 costs 2.3 points in the measured run
    default = privacy_options(family)
    assert all(np.isinf(default.leakage[lv]).all() for lv in costly)
    wider = privacy_options(family, max_accuracy_loss=float(loss.max()))
    assert all(np.isfinite(wider.leakage[lv]).all() for lv in costly)


def test_a_noise_table_runs_its_own_model_with_no_level(m: Manifest) -> None:
    assert level_model(m, 4.0) == (m.model_id, None)
    assert level_model(dataclasses.replace(m, privacy={k: v for k, v in m.privacy.items() if k != "defence"}), 0.0) == (m.model_id, None)


def test_protection_says_the_measured_figures_against_each_target(family: Manifest) -> None:
    t = defence_table(family)
    for level in range(4):
        for b in range(family.n_blocks + 1):
            p = protection(family, level, b)
            assert p["reid_top1"] == t.reid_top1[level, b] and p["decoder_ssim"] == t.similarity[level, b]
            label_ssim = family.privacy["defence"]["label_only"]["decoder_ssim"][level]
            assert p["met"] == {"reid": p["reid_top1"] <= 0.05 + 0.10 + 1e-9,
                                "ssim": p["decoder_ssim"] <= label_ssim + 0.05 + 1e-9,
                                "accuracy": t.baseline_accuracy - t.accuracy[level, b] <= 0.02 + 1e-9}
            assert f"{p['reid_top1']:.2f} top-1" in p["says"] and f"SSIM {p['decoder_ssim']:.2f}" in p["says"]
    assert protection(family, 3, 6)["met"] == {"reid": False, "ssim": True, "accuracy": False}  # the measured misses


def _edited(family: Manifest, change) -> Manifest:
    d = copy.deepcopy(family.privacy["defence"])
    change(d)
    d["sha256"] = defence_digest(d)
    return dataclasses.replace(family, privacy={**family.privacy, "defence": d})


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("models"), "privacy.defence.models: missing in the manifest of 'orl_faces_cnn'"),
    (lambda d: d.__setitem__("models", d["models"][:3]), "privacy.defence.models: expected 4 model ids (one per level)"),
    (lambda d: d["models"].reverse(), "privacy.defence.models: level 0 must be 'orl_faces_cnn' itself, got 'orl_faces_cnn_level3'"),
    (lambda d: d["models"].__setitem__(2, d["models"][1]), "privacy.defence.models: expected a distinct model id per level"),
    (lambda d: d["models"].__setitem__(1, "../digits_cnn"), "privacy.defence.models: not a plain model id: '../digits_cnn'"),
    (lambda d: d.__setitem__("strengths", [0.0, 1.0, 2.0, 4.0]), "privacy.defence.strengths: a learned table's levels are 0, 1, 2, ..."),
    (lambda d: d["table"].pop("reid_top1"), "privacy.defence.table.reid_top1: missing in the manifest of 'orl_faces_cnn'"),
])
def test_a_malformed_learned_table_is_refused_naming_the_field(family: Manifest, change, message: str) -> None:
    import re

    with pytest.raises(DefenceTableError, match=f"^{re.escape(message)}$"):
        defence_table(_edited(family, change))


def test_an_edited_learned_table_is_refused(family: Manifest) -> None:
    d = copy.deepcopy(family.privacy["defence"])
    d["table"]["leakage"][3][6] = 0.0  # a level made to look safe after it was measured
    edited = dataclasses.replace(family, privacy={**family.privacy, "defence": d})
    with pytest.raises(DefenceTableError, match=r"privacy\.defence\.sha256"):
        defence_table(edited)


def test_the_docs_quote_the_runtime_figures(family: Manifest) -> None:
    page = " ".join((ROOT / "docs" / "explanation" / "adaptive-privacy.md").read_text().split())
    assert protection(family, 3, 6)["says"] in page
    device, radio = load_device("pi4"), load_radio("wifi")
    for prefs, max_split, row in [
        (Preferences(1, 0), None, "| privacy weight 0 | split 0, level 0 (the photo) | 1.00 |"),
        (Preferences(0, 1), None, "| privacy weight 0.1 .. 1, `--max-accuracy-loss 0.02` (the default) | split 6, level 0 | 0.20 |"),
        (Preferences(0, 1, max_accuracy_loss=0.03), None, "| privacy weight 0.1 .. 1, `--max-accuracy-loss 0.03` | split 6, level 3 | 0.14 |"),
        (Preferences(0, 1), 5, "| privacy weight 1, `--max-split 5` | split 5, level 1 | 0.36 |"),
    ]:
        d = decide_split(family, device, radio, prefs, max_split=max_split)
        b = d.recommended
        assert f"split {b}, level {int(d.strength_at(b))}" in row and f"| {d.p_priv[b]:.2f} |" in row
        assert row in page



@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("chance_top1"), "privacy.defence.chance_top1: expected finite values in [0.0, 1.0]"),
    (lambda d: d.__setitem__("chance_top1", 1.5), "privacy.defence.chance_top1: expected finite values in [0.0, 1.0]"),
    (lambda d: d["label_only"]["decoder_ssim"].pop(), "privacy.defence.label_only.decoder_ssim: expected shape [4], got [3]"),
    (lambda d: d.pop("label_only"), "privacy.defence.label_only.decoder_ssim: expected shape [4], got []"),
])
def test_a_learned_table_without_the_figures_the_panel_quotes_is_refused(family: Manifest, change, message: str) -> None:
    import re

    with pytest.raises(DefenceTableError, match=f"^{re.escape(message)}$"):
        defence_table(_edited(family, change))


def test_a_level_model_must_be_that_level_of_that_family(family: Manifest) -> None:
    level1 = zoo.load_manifest(model_id(1))
    assert check_level(family, 1, level1) is level1
    with pytest.raises(DefenceTableError, match=r"^privacy\.defence\.models\[2\] of 'orl_faces_cnn': names "
                                                r"'orl_faces_cnn_level2', got the model 'orl_faces_cnn_level1'$"):
        check_level(family, 2, level1)
    # a table edited to name another model for level 1: that model is not level 1 of this family
    other = _edited(family, lambda d: d["models"].__setitem__(1, "digits_cnn"))
    with pytest.raises(DefenceTableError, match=r"'digits_cnn' is not level 1 of 'orl_faces_cnn'"):
        check_level(other, 1, zoo.load_manifest("digits_cnn"))
    # one that says it is, with other blocks
    impostor = dataclasses.replace(zoo.load_manifest("digits_cnn"), model_id=model_id(1),
                                   privacy={"privacy_level": {"family": "orl_faces_cnn", "level": 1}})
    with pytest.raises(DefenceTableError, match=r"does not have 'orl_faces_cnn''s input and blocks"):
        check_level(family, 1, impostor)
    for bad in ("~root", "a\x00b"):
        with pytest.raises(DefenceTableError, match=r"privacy\.defence\.models: not a plain model id"):
            defence_table(_edited(family, lambda d, bad=bad: d["models"].__setitem__(1, bad)))
