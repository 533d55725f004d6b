"""Pictures of the ECD utility (needs matplotlib, which the runtime does not install)."""

from __future__ import annotations

from pathlib import Path

from ecd.errors import MissingExtraError
from ecd.manifest import Manifest
from ecd.profiles import DeviceProfile, RadioProfile
from ecd.split import Preferences, decide_split

PLOT_PRIVACY_WEIGHTS = (0.0, 0.2, 0.5, 0.8, 1.0)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("--plot needs matplotlib: pip install 'ecd-runtime[models]' or pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_split_curves(
    manifest: Manifest,
    device: DeviceProfile,
    radio: RadioProfile,
    prefs: Preferences,
    path: Path,
    encoding: str = "float32",
    max_split: int | None = None,
) -> None:
    """Left: E_comp, E_comm, Ê and P_priv per split. Right: U for several privacy weights, argmins marked."""
    plt = _pyplot()
    base = decide_split(manifest, device, radio, prefs, encoding, max_split)
    splits = range(manifest.n_blocks + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(splits, base.e_comp, "o-", label="E_comp (J)")
    left.plot(splits, base.e_comm, "s-", label="E_comm (J)")
    left.plot(splits, base.e_comp + base.e_comm, "k-", lw=1, label="E total (J)")
    left.set_yscale("log")
    left.set_xlabel("split b")
    left.set_ylabel("device energy per frame (J)")
    twin = left.twinx()
    twin.plot(splits, base.p_priv, "r^--", label="P_priv (SSIM)")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("P_priv")
    left.legend(loc="lower left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    left.set_title(f"{manifest.model_id} on {device.name} over {radio.name}", fontsize=9)
    for w in PLOT_PRIVACY_WEIGHTS:
        d = decide_split(manifest, device, radio, Preferences(1 - w, w, prefs.min_split), encoding, max_split)
        line = right.plot(splits, d.utility, "o-", ms=3, label=f"w_privacy={w:g}")[0]
        right.plot([d.recommended], [d.utility[d.recommended]], "*", ms=14, color=line.get_color())
    right.set_xlabel("split b")
    right.set_ylabel("U = w_energy·Ê + w_privacy·P_priv")
    right.set_title("utility; stars = recommended split", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
