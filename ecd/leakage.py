"""The privacy term of the split decision, read from the manifest: P_priv(b), the measured
model-inversion leakage per split, and the defence table (device-side noise measured against
retrained attackers), as ``ecd.split``'s docstring defines them. Never assumed: a manifest without
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
DEFENCE_KINDS = ("laplace_noise",)


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
    strengths: np.ndarray  # (S,): strengths[0] == 0, increasing
    scale: np.ndarray  # (n+1,): the noise's scale at strength 1, per split
    leakage: np.ndarray  # (S, n+1)
    accuracy: np.ndarray  # (S, n+1)
    baseline_accuracy: float
    similarity: np.ndarray  # (S, n+1): the larger of both attacks' mean SSIM

    def check_strength(self, model_id: str, strength: float) -> int:
        """Index of a measured strength; anything else is refused, naming the field."""
        match = np.flatnonzero(np.isclose(self.strengths, strength, rtol=0, atol=1e-9))
        if not match.size:
            raise PreferenceError(
                f"defence_strength: expected one of the measured strengths "
                f"{[float(v) for v in self.strengths]} for {model_id}, got {strength}"
            )
        return int(match[0])


def _defence_digest(record: dict) -> str:
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
    for key in ("kind", "strengths", "scale", "baseline_accuracy", "table", "sha256"):
        if key not in d:
            raise DefenceTableError(f"privacy.defence.{key}: missing in the manifest of {name!r}")
    if _defence_digest(d) != d["sha256"]:
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
    for key in ("leakage", "accuracy", "whitebox_ssim", "decoder_ssim"):
        if key not in table:
            raise DefenceTableError(f"privacy.defence.table.{key}: missing in the manifest of {name!r}")
    return DefenceTable(
        kind=str(d["kind"]),
        strengths=strengths,
        scale=array(d["scale"], "privacy.defence.scale", (n1,), 0.0, math.inf),
        leakage=array(table["leakage"], "privacy.defence.table.leakage", shape, 0.0, 1.0),
        accuracy=array(table["accuracy"], "privacy.defence.table.accuracy", shape, 0.0, 1.0),
        baseline_accuracy=float(array(d["baseline_accuracy"], "privacy.defence.baseline_accuracy", (), 0.0, 1.0)),
        similarity=np.maximum(array(table["whitebox_ssim"], "privacy.defence.table.whitebox_ssim", shape, -1.0, 1.0),
                              array(table["decoder_ssim"], "privacy.defence.table.decoder_ssim", shape, -1.0, 1.0)),
    )


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
    similarity = table.similarity.copy()
    similarity[0] = np.maximum(similarity[0], curve)
    if defence_strength is not None:
        allowed = np.zeros_like(leak, dtype=bool)
        allowed[table.check_strength(manifest.model_id, defence_strength)] = True
    else:
        allowed = table.baseline_accuracy - table.accuracy <= max_accuracy_loss + 1e-9
        allowed[0] = True
    return PrivacyOptions(table.strengths, np.where(allowed, leak, np.inf), f"{source}, with the defence table", similarity)
