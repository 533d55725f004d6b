"""The ECD split decision: argmin_b U(b) = w_energy·Ê(b) + w_privacy·P_priv(b).

Paper 000 (ECD), §IV, eq. (1): U = λ1·(P(S_comm) + P(S_comp)) + λ2·P(S_priv), the smallest U
recommended to the user, who sets λ1 (our ``w_energy``) and λ2 (our ``w_privacy``). docs/architecture.md
fixes the terms:

* ``E_comp(b) = Σ_{i<b} e_i``, ``e_i`` = the block's measured latency × the device's active power,
  or MACs × J/MAC where the device has not measured this model version;
* ``E_comm(b) = 8·bytes(b) × J/bit + J/transfer`` of the device's radio, ``bytes(b)`` the encoded
  tensor sent at split b (the device always sends something: at b = n, the logits);
* ``Ê(b) = E(b) / max over the candidate splits``, so both terms lie on [0, 1];
* ``P_priv(b)``: the measured model-inversion **leakage beyond the label** from the manifest — never
  assumed (``models/privacy.py``: ``L(b)``, the part of the attacks' similarity and identity matching
  above what a label-only attacker gets, rescaled to [0, 1]; the task's answer reaches the cloud
  whatever the split, so the split is charged only for what it reveals beyond it). Older manifests
  without ``privacy.leakage`` fall back to the similarity curve. Reading it (and the defence table)
  from the manifest is :mod:`ecd.leakage`'s.
* **Defence** (issue 17): where the manifest carries a measured defence table (``privacy.defence``:
  Laplace noise of a given strength added on the device, Titcombe et al. 2021), the decision picks
  a (split, strength) pair: ``U(b, s) = w_energy·Ê(b) + w_privacy·L(b, s)`` over the settings whose
  measured task-accuracy loss is at most ``max_accuracy_loss`` (default 0.02; the undefended
  setting is always allowed). Noise costs the device no measurable energy, so at each split the
  best allowed strength is the one with the least leakage (ties: the lower measured similarity,
  then the weaker noise), and the split is chosen on that envelope. ``defence_strength`` pins one
  measured strength (0 = none).

Choices the paper leaves open (ours):

* **The undefended P_priv is used as its running minimum** ``min_{b' ≤ b} P(b')``. The activation
  at b is a function of the one at any b' < b, so (data-processing inequality) it cannot reveal
  more; a measured rise is attack noise. A noised activation at b is not a function of a noised one
  at b' < b, so defended rows are used as measured; with them the recommended split need not be
  monotone in w_privacy, but the chosen leakage never rises and the device energy never falls as
  w_privacy rises (the argmin of a weighted sum; tested).
* Where the manifest holds both a full-settings undefended leakage curve (``privacy.leakage``) and
  the defence table's undefended row, the larger of the two is used (both measure the same
  activation; the stronger attack counts).
* Weights must be finite, ≥ 0 and not both 0; they are normalised to sum 1.
* Candidates are ``min_split ≤ b ≤ max_split`` (the user's hard floor; by default the device may
  run every block). Ties in U go to the lower reconstruction similarity (the larger of both
  attacks' mean SSIM at the setting), then to less device energy, then to the deeper split. Why
  similarity first: L is 0 for every setting whose attacks do no better than the label-only
  attacker, so at w_privacy = 1 many settings tie, and a user who weighs only privacy wants the
  least recognisable of them, not the cheapest.
* The paper's §V.B prose swaps the roles of λ1 and λ2 relative to eq. (1) ("when λ2 is set with a
  large weight value, the ECD model shows an obvious orientation on the cost saving"); we follow
  eq. (1): ``w_energy`` weighs energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ecd.errors import PreconditionError, PreferenceError, RequestError
from ecd.leakage import DEFAULT_MAX_ACCURACY_LOSS, privacy_options
from ecd.manifest import Manifest
from ecd.profiles import DeviceProfile, RadioProfile

ENCODING_BYTES = {"float32": 4, "float16": 2, "int8": 1}
INT8_PARAMS_BYTES = 8  # scale (float32) + zero point (int32)


@dataclass(frozen=True)
class Preferences:
    """What a user sets. Normalised on construction."""

    w_energy: float
    w_privacy: float
    min_split: int = 0
    max_accuracy_loss: float = DEFAULT_MAX_ACCURACY_LOSS  # a defence may cost at most this accuracy
    defence_strength: float | None = None  # pin one measured strength (0 = none); None: the utility picks

    def __post_init__(self) -> None:
        for name in ("w_energy", "w_privacy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise PreferenceError(f"{name}: expected a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise PreferenceError(f"{name}: must be finite and >= 0, got {value}")
        total = self.w_energy + self.w_privacy
        if total == 0:
            raise PreferenceError("w_energy, w_privacy: must not both be 0")
        if not math.isfinite(total):  # 1e308 + 1e308 would normalise to 0/0
            raise PreferenceError(f"w_energy, w_privacy: their sum must be finite, got {self.w_energy} + {self.w_privacy}")
        object.__setattr__(self, "w_energy", float(self.w_energy) / total)
        object.__setattr__(self, "w_privacy", float(self.w_privacy) / total)
        if isinstance(self.min_split, bool) or not isinstance(self.min_split, (int, np.integer)) or self.min_split < 0:
            raise PreferenceError(f"min_split: expected an integer >= 0, got {self.min_split!r}")
        loss = self.max_accuracy_loss
        if isinstance(loss, bool) or not isinstance(loss, (int, float, np.floating, np.integer)) or not (
            math.isfinite(loss) and 0.0 <= loss <= 1.0
        ):
            raise PreferenceError(f"max_accuracy_loss: expected a number in [0, 1], got {loss!r}")
        st = self.defence_strength
        if st is not None and (
            isinstance(st, bool) or not isinstance(st, (int, float, np.floating, np.integer)) or not math.isfinite(st) or st < 0
        ):
            raise PreferenceError(f"defence_strength: expected a finite number >= 0, got {st!r}")


def check_split(manifest: Manifest, split_device: int, min_split: int) -> None:
    """Refuse a ``split.device`` outside the model or below the device's floor.

    Every tier runs this same check on every frame (the device before sending, the edge and the
    cloud on receipt): a frame from below the floor is never processed.
    """
    n = manifest.n_blocks
    if not 0 <= split_device <= n:
        raise RequestError(f"split_device: expected 0..{n} for {manifest.model_id}, got {split_device}")
    if split_device < min_split:
        raise PreconditionError(f"split_device: {split_device} is below the device's floor (min_split {min_split})")


def encoded_bytes(manifest: Manifest, encoding: str = "float32", raw_image: bool = False) -> np.ndarray:
    """Bytes per sample sent at each split 0..n under ``encoding``.

    ``raw_image``: at split 0 the device sends the image as captured, one byte per pixel value
    (UINT8_IMAGE), not the normalised input in ``encoding`` — what the agent does unless a defence
    noises the input."""
    if encoding not in ENCODING_BYTES:
        raise PreferenceError(f"encoding: expected one of {', '.join(ENCODING_BYTES)}, got {encoding!r}")
    elements = np.array([np.prod(manifest.activation_shape(b)) for b in range(manifest.n_blocks + 1)], dtype=np.float64)
    extra = INT8_PARAMS_BYTES if encoding == "int8" else 0
    sent = elements * ENCODING_BYTES[encoding] + extra
    if raw_image:
        sent[0] = elements[0]
    return sent


def block_energy(manifest: Manifest, device: DeviceProfile) -> tuple[np.ndarray, str]:
    """Joules per block on ``device`` and how they were obtained ("measured" or "MACs")."""
    m = device.measured.get(manifest.model_id)
    if m is not None and m.version == manifest.version and len(m.block_latency_s) == manifest.n_blocks:
        return np.asarray(m.block_latency_s, dtype=np.float64) * device.cpu_active_w, "measured"
    return np.array([b.macs for b in manifest.blocks], dtype=np.float64) * device.joules_per_mac, "MACs"


def compute_energy(manifest: Manifest, device: DeviceProfile) -> np.ndarray:
    """E_comp(b), b = 0..n."""
    e, _ = block_energy(manifest, device)
    return np.concatenate([[0.0], np.cumsum(e)])


def comm_energy(manifest: Manifest, radio: RadioProfile, encoding: str = "float32", raw_image: bool = False) -> np.ndarray:
    """E_comm(b), b = 0..n (``raw_image``: as in ``encoded_bytes``)."""
    return encoded_bytes(manifest, encoding, raw_image) * 8 * radio.joules_per_bit + radio.joules_per_transfer


def choose_splits(
    energy: np.ndarray,
    p_priv: np.ndarray,
    w_energy: np.ndarray,
    w_privacy: np.ndarray,
    min_split: np.ndarray,
    max_split: int,
    similarity: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The vectorised core: one row per user.

    ``energy``: users × (n+1) device joules per split; ``p_priv``: (n+1,); weights and floors: (users,),
    weights already normalised; ``similarity`` (n+1,): the first tie-break. Returns (chosen split
    per user, utility matrix with +inf outside each user's candidates).
    """
    users, n_plus_1 = energy.shape
    b = np.arange(n_plus_1)
    allowed = (b[None, :] >= min_split[:, None]) & (b[None, :] <= max_split)
    e_max = np.where(allowed, energy, -np.inf).max(axis=1, keepdims=True)
    e_hat = energy / np.where(e_max > 0, e_max, 1.0)
    utility = w_energy[:, None] * e_hat + w_privacy[:, None] * p_priv[None, :]
    utility = np.where(allowed, utility, np.inf)
    best = utility.min(axis=1, keepdims=True)
    ties = utility == best
    if similarity is not None:
        tie_similarity = np.where(ties, similarity[None, :], np.inf)
        ties &= similarity[None, :] == tie_similarity.min(axis=1, keepdims=True)
    tie_energy = np.where(ties, energy, np.inf)
    ties &= energy == tie_energy.min(axis=1, keepdims=True)
    deepest = n_plus_1 - 1 - np.argmax(ties[:, ::-1], axis=1)
    return deepest, utility


@dataclass(frozen=True)
class SplitDecision:
    """One user's curve and recommendation."""

    model_id: str
    version: str
    device: str
    radio: str
    encoding: str
    preferences: Preferences
    max_split: int
    compute_source: str  # "measured" latency or "MACs"
    bytes_sent: np.ndarray  # per split
    e_comp: np.ndarray  # J
    e_comm: np.ndarray  # J
    energy_norm: np.ndarray  # Ê, over the candidate splits
    p_priv: np.ndarray  # running minimum of the measured curve
    utility: np.ndarray  # +inf outside the candidates
    recommended: int
    strengths: np.ndarray = field(default_factory=lambda: np.array([0.0]))  # measured defence strengths
    options: np.ndarray | None = None  # (S, n+1) leakage per allowed (strength, split), +inf elsewhere
    strength_per_split: np.ndarray | None = None  # the best allowed strength at each split
    recommended_strength: float = 0.0
    privacy_source: str = "similarity"

    def strength_at(self, split: int) -> float:
        """The defence strength this decision uses if the device sends at ``split``."""
        if self.strength_per_split is None:
            return 0.0
        return float(self.strength_per_split[split])

    def to_dict(self) -> dict:
        rows = []
        for b in range(len(self.utility)):
            rows.append({
                "split": b,
                "bytes": int(self.bytes_sent[b]),
                "e_comp_j": float(self.e_comp[b]),
                "e_comm_j": float(self.e_comm[b]),
                "energy_norm": float(self.energy_norm[b]),
                "p_priv": float(self.p_priv[b]),
                "defence_strength": self.strength_at(b),
                "utility": None if not np.isfinite(self.utility[b]) else float(self.utility[b]),
                "candidate": bool(np.isfinite(self.utility[b])),
            })
        return {
            "model": self.model_id,
            "version": self.version,
            "device": self.device,
            "radio": self.radio,
            "encoding": self.encoding,
            "w_energy": self.preferences.w_energy,
            "w_privacy": self.preferences.w_privacy,
            "min_split": self.preferences.min_split,
            "max_split": self.max_split,
            "compute_energy_from": self.compute_source,
            "recommended_split": self.recommended,
            "recommended_defence_strength": self.recommended_strength,
            "max_accuracy_loss": self.preferences.max_accuracy_loss,
            "privacy_term": self.privacy_source,
            "defence_strengths": [float(v) for v in self.strengths],
            "splits": rows,
        }


def _max_split(manifest: Manifest, max_split: int | None) -> int:
    n = manifest.n_blocks
    hi = n if max_split is None else max_split
    if not 0 <= hi <= n:
        raise PreferenceError(f"max_split: expected 0..{n}, got {hi}")
    return hi


def _check_max_split(manifest: Manifest, prefs_min: int, max_split: int | None) -> int:
    n = manifest.n_blocks
    hi = _max_split(manifest, max_split)
    if not 0 <= prefs_min <= hi:
        raise PreferenceError(f"min_split: expected 0..{hi} for {manifest.model_id} ({n} blocks), got {prefs_min}")
    return hi


def decide_split(
    manifest: Manifest,
    device: DeviceProfile,
    radio: RadioProfile,
    prefs: Preferences,
    encoding: str = "float32",
    max_split: int | None = None,
) -> SplitDecision:
    """One user's recommended split and the whole curve."""
    hi = _check_max_split(manifest, prefs.min_split, max_split)
    options = privacy_options(manifest, prefs.max_accuracy_loss, prefs.defence_strength)
    p = options.envelope
    e_comp_blocks, source = block_energy(manifest, device)
    e_comp = np.concatenate([[0.0], np.cumsum(e_comp_blocks)])
    raw_image = bool(options.best_strength[0] <= 0)  # the agent sends the captured image at split 0
    e_comm = comm_energy(manifest, radio, encoding, raw_image)
    energy = (e_comp + e_comm)[None, :]
    chosen, utility = choose_splits(
        energy, p, np.array([prefs.w_energy]), np.array([prefs.w_privacy]), np.array([prefs.min_split]), hi,
        options.similarity_at_best,
    )
    allowed = np.isfinite(utility[0])
    e_max = energy[0][allowed].max()
    return SplitDecision(
        model_id=manifest.model_id,
        version=manifest.version,
        device=device.name,
        radio=radio.name,
        encoding=encoding,
        preferences=prefs,
        max_split=hi,
        compute_source=source,
        bytes_sent=encoded_bytes(manifest, encoding, raw_image),
        e_comp=e_comp,
        e_comm=e_comm,
        energy_norm=energy[0] / (e_max if e_max > 0 else 1.0),
        p_priv=p,
        utility=utility[0],
        recommended=int(chosen[0]),
        strengths=options.strengths,
        options=options.leakage,
        strength_per_split=options.best_strength,
        recommended_strength=float(options.best_strength[int(chosen[0])]),
        privacy_source=options.source,
    )


def decide_splits(
    manifest: Manifest,
    devices: Sequence[DeviceProfile],
    radios: Sequence[RadioProfile],
    device_index: np.ndarray,
    radio_index: np.ndarray,
    w_energy: np.ndarray,
    w_privacy: np.ndarray,
    min_split: np.ndarray,
    encoding: str = "float32",
    max_split: int | None = None,
    max_accuracy_loss: float = DEFAULT_MAX_ACCURACY_LOSS,
    return_strengths: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Recommended splits for many users at once (arrays of one entry per user); with
    ``return_strengths``, also each user's defence strength."""
    hi = _max_split(manifest, max_split)
    w_e = np.asarray(w_energy, dtype=np.float64)
    w_p = np.asarray(w_privacy, dtype=np.float64)
    floor = np.asarray(min_split)
    for name, arr in (("w_energy", w_e), ("w_privacy", w_p)):
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            raise PreferenceError(f"{name}: must be finite and >= 0; user {int(np.argmax(bad))} has {arr[bad][0]}")
    total = w_e + w_p
    if (total == 0).any():
        raise PreferenceError(f"w_energy, w_privacy: must not both be 0 (user {int(np.argmax(total == 0))})")
    if not np.issubdtype(floor.dtype, np.integer) or ((floor < 0) | (floor > hi)).any():
        raise PreferenceError(f"min_split: expected integers in 0..{hi}")
    dev_idx = np.asarray(device_index)
    rad_idx = np.asarray(radio_index)
    if ((dev_idx < 0) | (dev_idx >= len(devices))).any():
        raise PreferenceError(f"device_index: expected 0..{len(devices) - 1}")
    if ((rad_idx < 0) | (rad_idx >= len(radios))).any():
        raise PreferenceError(f"radio_index: expected 0..{len(radios) - 1}")
    if not (math.isfinite(max_accuracy_loss) and 0.0 <= max_accuracy_loss <= 1.0):
        raise PreferenceError(f"max_accuracy_loss: expected a number in [0, 1], got {max_accuracy_loss!r}")
    options = privacy_options(manifest, max_accuracy_loss)
    p = options.envelope
    comp_table = np.stack([compute_energy(manifest, d) for d in devices])
    raw_image = bool(options.best_strength[0] <= 0)  # as in decide_split
    comm_table = np.stack([comm_energy(manifest, r, encoding, raw_image) for r in radios])
    energy = comp_table[dev_idx] + comm_table[rad_idx]
    chosen, _ = choose_splits(energy, p, w_e / total, w_p / total, floor, hi, options.similarity_at_best)
    if return_strengths:
        return chosen, options.best_strength[chosen]
    return chosen
