"""The privacy term of the split decision, read from the manifest: P_priv(b), the measured
model-inversion leakage per split, and the defence table, as ``ecd.split``'s docstring defines them.
A defence table is of one of two kinds: ``laplace_noise`` (fresh device-side noise of a measured
scale; its rows are noise strengths) or ``learned`` (issue 35: one model trained with the defence per
privacy level, each run under its own model id; its rows are the levels), both measured against
attackers retrained on the defended activations. Never assumed: a manifest without
a measured curve is refused (:class:`PrivacyNotMeasuredError`), and a defence table is checked
field by field and against its digest before any decision uses it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from ecd.errors import EcdError, ManifestError, PreferenceError
from ecd.manifest import Manifest

DEFAULT_MAX_ACCURACY_LOSS = 0.02  # accuracy a defence may cost (fraction of held-out images)
DEFENCE_KINDS = ("laplace_noise", "learned")


class PrivacyNotMeasuredError(EcdError, ValueError):
    """A manifest without a measured privacy curve: the decision refuses to invent one."""

    status = "FAILED_PRECONDITION"


class DefenceTableError(ManifestError):
    """A manifest's defence table that is missing where one is needed, malformed or edited after
    it was measured; the message names the field."""


def privacy_curve(manifest: Manifest) -> np.ndarray:
    """The measured P_priv(b), b = 0..n, as its running minimum; refuses a manifest without one."""
    return np.minimum.accumulate(measured_curve(manifest))


def measured_curve(manifest: Manifest) -> np.ndarray:
    """The measured similarity S(b), b = 0..n, as measured (clipped to [0, 1]), checked."""
    if not manifest.privacy or "curve" not in manifest.privacy:
        raise PrivacyNotMeasuredError(
            f"model {manifest.model_id!r} (version {manifest.version}) has no measured privacy curve; "
            f"measure it with `ecd models privacy {manifest.model_id}` — the split decision does not "
            "assume one"
        )
    curve = np.asarray(manifest.privacy["curve"], dtype=np.float64)
    if curve.shape != (manifest.n_blocks + 1,) or not np.all(np.isfinite(curve)):
        raise PrivacyNotMeasuredError(
            f"model {manifest.model_id!r}: privacy.curve must hold {manifest.n_blocks + 1} finite values"
        )
    return np.clip(curve, 0.0, 1.0)


def leakage_curve(manifest: Manifest) -> tuple[np.ndarray, str]:
    """The undefended privacy term L(b), b = 0..n, as its running minimum, and where it came from:
    ``privacy.leakage`` (beyond the label) or, for a manifest measured before it existed, the
    similarity ``privacy.curve``."""
    if manifest.privacy and "leakage" in manifest.privacy:
        values = np.asarray(manifest.privacy["leakage"], dtype=np.float64)
        if values.shape != (manifest.n_blocks + 1,) or not np.all(np.isfinite(values)):
            raise PrivacyNotMeasuredError(
                f"model {manifest.model_id!r}: privacy.leakage must hold {manifest.n_blocks + 1} finite values"
            )
        return np.minimum.accumulate(np.clip(values, 0.0, 1.0)), "leakage beyond the label"
    return privacy_curve(manifest), "similarity"


@dataclass(frozen=True)
class DefenceTable:
    """A manifest's measured defence table (``privacy.defence``), checked."""

    kind: str
    strengths: np.ndarray  # (S,): strengths[0] == 0, increasing (learned: the levels 0, 1, ...)
    scale: np.ndarray  # (n+1,): the noise's scale at strength 1, per split (learned: zeros, no noise)
    leakage: np.ndarray  # (S, n+1)
    accuracy: np.ndarray  # (S, n+1)
    baseline_accuracy: float
    similarity: np.ndarray  # (S, n+1): the larger of both attacks' mean SSIM (learned: the decoder's)
    models: tuple[str, ...] = ()  # learned: the model id that runs each level (models[0]: this model)
    reid_top1: np.ndarray | None = None  # learned: (S, n+1) the worst re-identification top-1
    chance_top1: float = math.nan  # learned: re-identification's chance (1 / people)
    label_ssim: np.ndarray | None = None  # learned: (S,) the decoder's SSIM from the task output alone, per level

    @property
    def learned(self) -> bool:
        """A table of trained levels (each another model), not of noise strengths."""
        return self.kind == "learned"

    def check_strength(self, model_id: str, strength: float) -> int:
        """Index of a measured strength; anything else is refused, naming the field."""
        match = np.flatnonzero(np.isclose(self.strengths, strength, rtol=0, atol=1e-9))
        if not match.size:
            raise PreferenceError(
                f"defence_strength: expected one of the measured strengths "
                f"{[float(v) for v in self.strengths]} for {model_id}, got {strength}"
            )
        return int(match[0])


def defence_digest(record: dict) -> str:
    """The sha256 a defence table is stored with: of its fields but ``sha256``, as canonical JSON."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def defence_table(manifest: Manifest, required: bool = False) -> DefenceTable | None:
    """The manifest's ``privacy.defence``, validated; None where absent (an error if ``required``).

    Refused, naming the field: a missing or malformed field, a table whose rows do not match the
    strengths and splits, values outside [0, 1], or a table that does not match its sha256 (edited
    after it was measured)."""
    name = manifest.model_id
    d = (manifest.privacy or {}).get("defence")
    if d is None:
        if required:
            raise DefenceTableError(
                f"privacy.defence: model {name!r} (version {manifest.version}) has no measured defence "
                f"table; measure it with `ecd models privacy {name}`"
            )
        return None
    if not isinstance(d, dict):
        raise DefenceTableError(f"privacy.defence: expected an object in the manifest of {name!r}")
    learned = d.get("kind") == "learned"
    for key in ("kind", "strengths", "models" if learned else "scale", "baseline_accuracy", "table", "sha256"):
        if key not in d:
            raise DefenceTableError(f"privacy.defence.{key}: missing in the manifest of {name!r}")
    if defence_digest(d) != d["sha256"]:
        raise DefenceTableError(
            f"privacy.defence.sha256: the defence table of {name!r} does not match its sha256 (edited after "
            f"it was measured?); measure it again with `ecd models privacy {name}`"
        )
    if d["kind"] not in DEFENCE_KINDS:
        raise DefenceTableError(f"privacy.defence.kind: expected one of {', '.join(DEFENCE_KINDS)}, got {d['kind']!r}")
    table = d["table"]
    if not isinstance(table, dict):
        raise DefenceTableError(f"privacy.defence.table: expected an object in the manifest of {name!r}")
    n1 = manifest.n_blocks + 1

    def array(value: object, field_name: str, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DefenceTableError(f"{field_name}: expected numbers") from None
        if arr.shape != shape:
            raise DefenceTableError(f"{field_name}: expected shape {list(shape)}, got {list(arr.shape)}")
        if not np.all(np.isfinite(arr)) or np.any(arr < low) or np.any(arr > high):
            raise DefenceTableError(f"{field_name}: expected finite values in [{low}, {high}]")
        return arr

    strengths = np.asarray(d["strengths"], dtype=np.float64) if isinstance(d["strengths"], list) else None
    if strengths is None or strengths.ndim != 1 or len(strengths) == 0 or not np.all(np.isfinite(strengths)):
        raise DefenceTableError("privacy.defence.strengths: expected a non-empty list of finite numbers")
    if strengths[0] != 0.0 or np.any(np.diff(strengths) <= 0):
        raise DefenceTableError("privacy.defence.strengths: expected 0 first, then increasing")
    shape = (len(strengths), n1)
    keys = ("leakage", "accuracy", "decoder_ssim", "reid_top1") if learned else ("leakage", "accuracy", "whitebox_ssim", "decoder_ssim")
    for key in keys:
        if key not in table:
            raise DefenceTableError(f"privacy.defence.table.{key}: missing in the manifest of {name!r}")
    decoder = array(table["decoder_ssim"], "privacy.defence.table.decoder_ssim", shape, -1.0, 1.0)
    return DefenceTable(
        kind=str(d["kind"]),
        strengths=strengths,
        scale=np.zeros(n1) if learned else array(d["scale"], "privacy.defence.scale", (n1,), 0.0, math.inf),
        leakage=array(table["leakage"], "privacy.defence.table.leakage", shape, 0.0, 1.0),
        accuracy=array(table["accuracy"], "privacy.defence.table.accuracy", shape, 0.0, 1.0),
        baseline_accuracy=float(array(d["baseline_accuracy"], "privacy.defence.baseline_accuracy", (), 0.0, 1.0)),
        similarity=decoder if learned else np.maximum(
            array(table["whitebox_ssim"], "privacy.defence.table.whitebox_ssim", shape, -1.0, 1.0), decoder),
        models=_level_models(d, manifest, len(strengths)) if learned else (manifest.model_id,),
        reid_top1=array(table["reid_top1"], "privacy.defence.table.reid_top1", shape, 0.0, 1.0) if learned else None,
        chance_top1=float(array(d.get("chance_top1"), "privacy.defence.chance_top1", (), 0.0, 1.0)) if learned else math.nan,
        label_ssim=array((d.get("label_only") or {}).get("decoder_ssim") if isinstance(d.get("label_only"), dict) else None,
                         "privacy.defence.label_only.decoder_ssim", (len(strengths),), -1.0, 1.0) if learned else None,
    )


def _level_models(d: dict, manifest: Manifest, levels: int) -> tuple[str, ...]:
    """A learned table's ``models``: one plain model id per level, this model's own first."""
    models = d["models"]
    if not isinstance(models, list) or len(models) != levels or not all(isinstance(m, str) and m for m in models):
        raise DefenceTableError(f"privacy.defence.models: expected {levels} model ids (one per level)")
    if models[0] != manifest.model_id:
        raise DefenceTableError(f"privacy.defence.models: level 0 must be {manifest.model_id!r} itself, got {models[0]!r}")
    if len(set(models)) != levels:
        raise DefenceTableError("privacy.defence.models: expected a distinct model id per level")
    for m in models:
        if m in (".", "..") or "/" in m or "\\" in m or m.startswith("~") or len(m) > 64 or not m.isprintable():
            raise DefenceTableError(f"privacy.defence.models: not a plain model id: {m[:64]!r}")
    if any(float(v) != i for i, v in enumerate(d["strengths"])):
        raise DefenceTableError("privacy.defence.strengths: a learned table's levels are 0, 1, 2, ...")
    return tuple(models)


@dataclass(frozen=True)
class PrivacyOptions:
    """Every (strength, split) the user may choose and its privacy term (+inf where not allowed)."""

    strengths: np.ndarray  # (S,)
    leakage: np.ndarray  # (S, n+1), +inf outside the allowed settings
    source: str
    similarity: np.ndarray  # (S, n+1): the attacks' similarity, to break ties in U

    @property
    def best_index(self) -> np.ndarray:
        """Per split, the row of the setting it uses: the least leakage; ties: the lower measured
        similarity, then the weaker noise."""
        at_envelope = self.leakage == self.envelope[None, :]
        similarity = np.where(at_envelope, self.similarity, np.inf)
        return np.argmax(at_envelope & (similarity == similarity.min(axis=0)[None, :]), axis=0)

    @property
    def similarity_at_best(self) -> np.ndarray:
        """The similarity of the setting each split would use (its ``best_strength``)."""
        return self.similarity[self.best_index, np.arange(self.leakage.shape[1])]

    @property
    def envelope(self) -> np.ndarray:
        """P_priv(b): the least leakage over the allowed strengths at each split."""
        return self.leakage.min(axis=0)

    @property
    def best_strength(self) -> np.ndarray:
        """The strength that reaches the envelope at each split (``best_index``)."""
        return self.strengths[self.best_index]


def privacy_options(
    manifest: Manifest,
    max_accuracy_loss: float = DEFAULT_MAX_ACCURACY_LOSS,
    defence_strength: float | None = None,
) -> PrivacyOptions:
    """The privacy term of every allowed (strength, split); see the module's docstring."""
    table = defence_table(manifest, required=defence_strength is not None and defence_strength > 0)
    undefended, source = leakage_curve(manifest)
    # the tie-break's similarity is used as measured (no running minimum: it only orders ties); a
    # manifest older than the curve has only its leakage, which then orders the ties as well
    curve = measured_curve(manifest) if manifest.privacy and "curve" in manifest.privacy else undefended
    if table is None:
        if defence_strength not in (None, 0, 0.0):  # unreachable: required above
            raise DefenceTableError(f"privacy.defence: missing in the manifest of {manifest.model_id!r}")
        return PrivacyOptions(np.array([0.0]), undefended[None, :], source, curve[None, :])
    leak = table.leakage.copy()
    leak[0] = np.minimum.accumulate(np.maximum(leak[0], undefended))
    if table.learned:  # each level is one model: a deeper activation cannot hold more of the input than an earlier one
        leak = np.minimum.accumulate(leak, axis=1)
    similarity = table.similarity.copy()
    similarity[0] = np.maximum(similarity[0], curve)
    if defence_strength is not None:
        allowed = np.zeros_like(leak, dtype=bool)
        allowed[table.check_strength(manifest.model_id, defence_strength)] = True
    else:
        allowed = table.baseline_accuracy - table.accuracy <= max_accuracy_loss + 1e-9
        allowed[0] = True
    return PrivacyOptions(table.strengths, np.where(allowed, leak, np.inf), f"{source}, with the defence table", similarity)


def level_model(manifest: Manifest, strength: float) -> tuple[str, int | None]:
    """The model id a device runs for the decision's defence ``strength``, and its privacy level:
    for a learned table the level's own model (a level is another set of weights for every tier);
    otherwise the manifest's own model and None (noise, if any, is added to its activations)."""
    table = defence_table(manifest)
    if table is None or not table.learned:
        return manifest.model_id, None
    level = table.check_strength(manifest.model_id, strength)
    return table.models[level], level


REID_MARGIN, SSIM_MARGIN = 0.10, 0.05  # issue 35's targets: re-id top-1 <= chance + 0.10, SSIM <= label-only + 0.05


def protection(manifest: Manifest, level: int, split: int) -> dict | None:
    """What a learned level protects at a split, from the measured table, in the words the panel
    shows: the worst re-identification and reconstruction an attacker on the link reached, beside
    chance and the task output alone, and the task accuracy — each against issue 35's target
    (``REID_MARGIN``, ``SSIM_MARGIN``, ``DEFAULT_MAX_ACCURACY_LOSS``). None without a learned table."""
    table = defence_table(manifest)
    if table is None or not table.learned or table.reid_top1 is None:
        return None
    assert table.label_ssim is not None
    chance, label_ssim = table.chance_top1, float(table.label_ssim[level])
    reid, ssim = float(table.reid_top1[level, split]), float(table.similarity[level, split])
    accuracy = float(table.accuracy[level, split])
    met = {"reid": reid <= chance + REID_MARGIN + 1e-9, "ssim": ssim <= label_ssim + SSIM_MARGIN + 1e-9,
           "accuracy": table.baseline_accuracy - accuracy <= DEFAULT_MAX_ACCURACY_LOSS + 1e-9}

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    says = (f"privacy level {level} at split {split}: an attacker who sees what this device sends re-identifies "
            f"the person at up to {reid:.2f} top-1 (chance {chance:.2f}; target <= {chance + REID_MARGIN:.2f}: "
            f"{verdict(met['reid'])}) and reconstructs the photo at SSIM {ssim:.2f} (the task output alone: "
            f"{label_ssim:.2f}; target <= {label_ssim + SSIM_MARGIN:.2f}: {verdict(met['ssim'])}); task accuracy "
            f"{accuracy:.3f} (undefended {table.baseline_accuracy:.3f}: {verdict(met['accuracy'])})")
    return {"level": level, "split": split, "reid_top1": reid, "chance_top1": chance, "decoder_ssim": ssim,
            "label_ssim": label_ssim, "accuracy": accuracy, "baseline_accuracy": table.baseline_accuracy,
            "met": met, "says": says}


def check_level(family: Manifest, level: int, manifest: Manifest) -> Manifest:
    """``manifest`` as the model that runs ``family``'s privacy level ``level``, or refused naming the
    field: the id the table names, the same blocks' shapes and input (the split was decided on the
    family's), and its own record saying it is that level of that family — a table cannot send a
    device to run some other model."""
    table = defence_table(family, required=True)
    assert table is not None
    want = table.models[level]
    where = f"privacy.defence.models[{level}] of {family.model_id!r}"
    mark = (manifest.privacy or {}).get("privacy_level") or {}
    if manifest.model_id != want:
        raise DefenceTableError(f"{where}: names {want!r}, got the model {manifest.model_id!r}")
    if (mark.get("family"), mark.get("level")) != (family.model_id, level):
        raise DefenceTableError(f"{where}: {want!r} is not level {level} of {family.model_id!r} (its privacy.privacy_level: "
                                f"{mark.get('family')!r}, {mark.get('level')!r})")
    if manifest.input != family.input or [b.output_shape for b in manifest.blocks] != [b.output_shape for b in family.blocks]:
        raise DefenceTableError(f"{where}: {want!r} does not have {family.model_id!r}'s input and blocks")
    return manifest
