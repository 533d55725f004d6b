"""The ECD split decision: argmin_b U(b) = w_energy·Ê(b) + w_privacy·P_priv(b).

Paper 000 (ECD), §IV, eq. (1): U = λ1·(P(S_comm) + P(S_comp)) + λ2·P(S_priv), the smallest U
recommended to the user, who sets λ1 (our ``w_energy``) and λ2 (our ``w_privacy``). docs/architecture.md
fixes the terms:

* ``E_comp(b) = Σ_{i<b} e_i``, ``e_i`` = the block's measured latency × the device's active power,
  or MACs × J/MAC where the device has not measured this model version;
* ``E_comm(b) = 8·bytes(b) × J/bit + J/transfer`` of the device's radio, ``bytes(b)`` the encoded
  tensor sent at split b (the device always sends something: at b = n, the logits);
* ``Ê(b) = E(b) / max over the candidate splits``, so both terms lie on [0, 1];
* ``P_priv(b)``: the measured model-inversion curve from the manifest — never assumed.

Choices the paper leaves open (ours):

* **P_priv is used as its running minimum** ``min_{b' ≤ b} P(b')``. The activation at b is a
  function of the one at any b' < b, so (data-processing inequality) it cannot reveal more; a
  measured rise is attack noise. This also makes the recommended split monotone in w_privacy.
* Weights must be finite, ≥ 0 and not both 0; they are normalised to sum 1.
* Candidates are ``min_split ≤ b ≤ max_split`` (the user's hard floor; by default the device may
  run every block). Ties in U go to less device energy, then to the deeper split.
* The paper's §V.B prose swaps the roles of λ1 and λ2 relative to eq. (1) ("when λ2 is set with a
  large weight value, the ECD model shows an obvious orientation on the cost saving"); we follow
  eq. (1): ``w_energy`` weighs energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ecd.errors import EcdError, PreconditionError, RequestError
from ecd.manifest import Manifest
from ecd.profiles import DeviceProfile, RadioProfile

ENCODING_BYTES = {"float32": 4, "float16": 2, "int8": 1}
INT8_PARAMS_BYTES = 8  # scale (float32) + zero point (int32)


class PreferenceError(RequestError):
    """Weights or a split floor the decision cannot use; the message names the field."""


class PrivacyNotMeasuredError(EcdError, ValueError):
    """A manifest without a measured privacy curve: the decision refuses to invent one."""

    status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class Preferences:
    """What a user sets. Normalised on construction."""

    w_energy: float
    w_privacy: float
    min_split: int = 0

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
        object.__setattr__(self, "w_energy", float(self.w_energy) / total)
        object.__setattr__(self, "w_privacy", float(self.w_privacy) / total)
        if isinstance(self.min_split, bool) or not isinstance(self.min_split, (int, np.integer)) or self.min_split < 0:
            raise PreferenceError(f"min_split: expected an integer >= 0, got {self.min_split!r}")


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


def privacy_curve(manifest: Manifest) -> np.ndarray:
    """The measured P_priv(b), b = 0..n, as its running minimum; refuses a manifest without one."""
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
    return np.minimum.accumulate(np.clip(curve, 0.0, 1.0))


def encoded_bytes(manifest: Manifest, encoding: str = "float32") -> np.ndarray:
    """Bytes per sample sent at each split 0..n under ``encoding``."""
    if encoding not in ENCODING_BYTES:
        raise PreferenceError(f"encoding: expected one of {', '.join(ENCODING_BYTES)}, got {encoding!r}")
    elements = np.array([np.prod(manifest.activation_shape(b)) for b in range(manifest.n_blocks + 1)], dtype=np.float64)
    extra = INT8_PARAMS_BYTES if encoding == "int8" else 0
    return elements * ENCODING_BYTES[encoding] + extra


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


def comm_energy(manifest: Manifest, radio: RadioProfile, encoding: str = "float32") -> np.ndarray:
    """E_comm(b), b = 0..n."""
    return encoded_bytes(manifest, encoding) * 8 * radio.joules_per_bit + radio.joules_per_transfer


def choose_splits(
    energy: np.ndarray,
    p_priv: np.ndarray,
    w_energy: np.ndarray,
    w_privacy: np.ndarray,
    min_split: np.ndarray,
    max_split: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The vectorised core: one row per user.

    ``energy``: users × (n+1) device joules per split; ``p_priv``: (n+1,); weights and floors: (users,),
    weights already normalised. Returns (chosen split per user, utility matrix with +inf outside
    each user's candidates).
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
    p = privacy_curve(manifest)
    e_comp_blocks, source = block_energy(manifest, device)
    e_comp = np.concatenate([[0.0], np.cumsum(e_comp_blocks)])
    e_comm = comm_energy(manifest, radio, encoding)
    energy = (e_comp + e_comm)[None, :]
    chosen, utility = choose_splits(
        energy, p, np.array([prefs.w_energy]), np.array([prefs.w_privacy]), np.array([prefs.min_split]), hi
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
        bytes_sent=encoded_bytes(manifest, encoding),
        e_comp=e_comp,
        e_comm=e_comm,
        energy_norm=energy[0] / (e_max if e_max > 0 else 1.0),
        p_priv=p,
        utility=utility[0],
        recommended=int(chosen[0]),
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
) -> np.ndarray:
    """Recommended splits for many users at once (arrays of one entry per user)."""
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
    p = privacy_curve(manifest)
    comp_table = np.stack([compute_energy(manifest, d) for d in devices])
    comm_table = np.stack([comm_energy(manifest, r, encoding) for r in radios])
    energy = comp_table[dev_idx] + comm_table[rad_idx]
    chosen, _ = choose_splits(energy, p, w_e / total, w_p / total, floor, hi)
    return chosen
