"""Attacks that know the defence (issue 35), on what leaves the device at a split of a NoPeek model.

The attacker knows the architecture, the weights of every privacy level and the defence's code
(the defence is deterministic: there is no per-device secret to withhold), and holds the photos of
the 20 *attacker* people; it is scored on the 20 *evaluated* people (:mod:`models.orl_task`).
Every attack takes a *view* — a function from pixels to what the attacker observes — so the same
code runs on the activation at a split and on the task output alone (the label-only baseline).

* **decoder** (He, Zhang & Lee 2019's inverse network, :func:`models.inversion.decoder_attack`),
  trained on the *defended* activations of the attacker people's captures; scored by SSIM / PSNR
  against the probe photo, and as a re-identifier: its reconstruction matched (Pearson correlation
  over pixels) to the gallery photos, a person scoring their best-matching photo.
* **matcher**: an embedding trained on the attacker people's activations to tell *those* people
  apart (an MLP classifier; its hidden layer is the embedding), then used on people it never saw:
  each probe is matched by cosine to the mean embedding of each evaluated person's gallery photos.
* **linear probe**: logistic regression fit on the *evaluated* people's gallery photos' activations,
  tested on their probes — the strongest attacker here, holding labelled photos of the very people.

**Frames.** A capture is the photo as a camera sees it again: shifted by up to 1 pixel, brightness
x U(0.9, 1.1), sensor noise N(0, 0.02). A k-frame probe averages the view over k captures before
the attack. For re-identification the k captures are drawn from *all* the person's probe photos
(a person seen over a stream, in several poses: averaging over poses is the attacker's best use of
many frames against a deterministic defence, which gives one photo the same activation every time);
for the decoder, k captures of *one* probe photo (SSIM needs that photo as the target). k = 1 is
one capture of one photo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models.inversion import AttackSettings, decoder_attack
from models.orl_task import TaskImages
from models.privacy import psnr, ssim

View = nn.Module  # pixels in [0, 1] (n, 1, H, W) -> what is observed (its own shape)
ATTACKS = ("decoder", "matcher", "linear_probe")


@dataclass(frozen=True)
class AttackConfig:
    ks: tuple[int, ...] = (1, 8, 64)
    draws_per_person: int = 5  # k-frame probes per evaluated person, for k > 1
    captures: int = 4  # captures per photo the attacker trains on
    decoder: AttackSettings = field(default_factory=lambda: AttackSettings(decoder_epochs=20, decoder_width=16))
    matcher_epochs: int = 60
    seed: int = 0


def unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W) -> pixels in [0, 1], (n, 1, H, W)."""
    return torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)


def capture(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One camera capture of each photo (pixels in [0, 1]): +-1 px shift, brightness, sensor noise."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    dy, dx = torch.randint(0, 3, (n,), generator=gen), torch.randint(0, 3, (n,), generator=gen)
    shifted = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    gain = 0.9 + 0.2 * torch.rand((n, 1, 1, 1), generator=gen)
    return (shifted * gain + 0.02 * torch.randn(shifted.shape, generator=gen)).clamp(0, 1)


def observe(view: View, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([view(x[i : i + 512]) for i in range(0, len(x), 512)])


def averaged(view: View, x: torch.Tensor, pools: list[np.ndarray], k: int, gen: torch.Generator) -> torch.Tensor:
    """One k-frame observation per pool: the view averaged over k captures of photos drawn from it."""
    picks = np.concatenate([pool[torch.randint(0, len(pool), (k,), generator=gen).numpy()] for pool in pools])
    z = observe(view, capture(x[torch.from_numpy(picks)], gen))
    return z.view(len(pools), k, *z.shape[1:]).mean(1)


def topk_hits(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean chance that the true column ranks in the top k, ties broken at random (exactly, not drawn)."""
    true_score = scores[np.arange(len(scores)), truth][:, None]
    greater, equal = (scores > true_score).sum(1), (scores == true_score).sum(1)
    return float(np.clip((k - greater) / equal, 0.0, 1.0).mean())


def train_matcher(train_z: torch.Tensor, train_person: np.ndarray, cfg: AttackConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """An embedding that tells the attacker's own people apart (an MLP classifier's hidden layer)."""
    torch.manual_seed(cfg.seed)
    ids = {p: i for i, p in enumerate(np.unique(train_person))}
    y = torch.tensor([ids[p] for p in train_person])
    flat = train_z.flatten(1)
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    embed = nn.Sequential(nn.Linear(flat.shape[1], 64), nn.ReLU())
    head = nn.Linear(64, len(ids))
    opt = torch.optim.Adam([*embed.parameters(), *head.parameters()], lr=1e-3, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = (flat - mean) / std
    for _ in range(cfg.matcher_epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 64):
            idx = order[start : start + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(head(embed(x[idx])), y[idx]).backward()
            opt.step()

    def embedding(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return nn.functional.normalize(embed((z.flatten(1) - mean) / std), dim=1)

    return embedding


def matcher_scores(embedding: Callable[[torch.Tensor], torch.Tensor], gallery_z: torch.Tensor, gallery_person: np.ndarray,
                   probe_z: torch.Tensor, people: np.ndarray) -> np.ndarray:
    """Cosine between each probe's embedding and each person's mean gallery embedding."""
    g = embedding(gallery_z)
    centroids = nn.functional.normalize(torch.stack([g[torch.from_numpy(gallery_person == q)].mean(0) for q in people]), dim=1)
    return (embedding(probe_z) @ centroids.T).numpy()


def fit_probe(gallery_z: torch.Tensor, gallery_person: np.ndarray, people: np.ndarray) -> Callable[[torch.Tensor], np.ndarray]:
    """A linear identity probe fit on the gallery's views; scores probes (columns: ``people``)."""
    from sklearn.linear_model import LogisticRegression

    flat = gallery_z.flatten(1)
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    fit = LogisticRegression(C=0.1, max_iter=300).fit(((flat - mean) / std).numpy(), gallery_person)
    assert list(fit.classes_) == list(people)
    return lambda z: fit.decision_function(((z.flatten(1) - mean) / std).numpy())


def pixel_match_scores(recon: np.ndarray, gallery: np.ndarray, gallery_person: np.ndarray, people: np.ndarray) -> np.ndarray:
    """Pearson correlation of each reconstruction with each gallery photo; a person scores their best."""
    def rows(a: np.ndarray) -> np.ndarray:
        a = a.reshape(len(a), -1).astype(np.float64)
        a = a - a.mean(1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)

    corr = rows(recon) @ rows(gallery).T
    return np.stack([corr[:, gallery_person == q].max(1) for q in people], axis=1)


@dataclass(frozen=True)
class Scene:
    """Who is attacked: the attacker people's faces, and the evaluated people's gallery and probes."""

    attacker: TaskImages
    gallery: TaskImages
    probes: TaskImages

    @property
    def people(self) -> np.ndarray:
        return np.unique(self.gallery.person)


def attack_view(view: View, scene: Scene, cfg: AttackConfig) -> dict:
    """Every attack at every k on one view: SSIM / PSNR of the decoder, re-id top-1 / top-5 of each."""
    gen = torch.Generator().manual_seed(cfg.seed)
    people = scene.people
    col = {p: i for i, p in enumerate(people)}
    atk_x, gal_x, prb_x = unit(scene.attacker.images), unit(scene.gallery.images), unit(scene.probes.images)
    atk_caps = torch.cat([capture(atk_x, gen) for _ in range(cfg.captures)])
    atk_person = np.tile(scene.attacker.person, cfg.captures)
    gal_caps = torch.cat([capture(gal_x, gen) for _ in range(cfg.captures)])
    gal_person = np.tile(scene.gallery.person, cfg.captures)
    atk_z, gal_z, gal_clean = observe(view, atk_caps), observe(view, gal_caps), observe(view, gal_x)
    photo_pools = [np.array([i]) for i in range(len(prb_x))]
    person_pools = [np.flatnonzero(scene.probes.person == p) for p in people for _ in range(cfg.draws_per_person)]
    per_photo, per_person, truths = [], [], []
    for k in cfg.ks:  # k = 1: one capture of each probe photo, for every attack
        per_photo.append(averaged(view, prb_x, photo_pools, k, gen))
        per_person.append(per_photo[-1] if k == 1 else averaged(view, prb_x, person_pools, k, gen))
        truth_person = scene.probes.person if k == 1 else np.repeat(people, cfg.draws_per_person)
        truths.append(np.array([col[p] for p in truth_person]))
    sizes = [len(z) for z in per_photo + per_person]
    decoded = np.split(decoder_attack(view, atk_caps, torch.cat(per_photo + per_person), cfg.decoder).numpy(),
                       np.cumsum(sizes)[:-1])
    embedding, probe = train_matcher(atk_z, atk_person, cfg), fit_probe(gal_z, gal_person, people)
    originals = prb_x.numpy()
    out: dict = {"ks": list(cfg.ks), "ssim": [], "psnr_db": [], **{a: {"top1": [], "top5": []} for a in ATTACKS}}
    for i, truth in enumerate(truths):
        recon = decoded[i]
        out["ssim"].append(float(np.mean([ssim(r, o) for r, o in zip(recon, originals)])))
        finite = [v for v in (psnr(r, o) for r, o in zip(recon, originals)) if v is not None]
        out["psnr_db"].append(float(np.mean(finite)) if finite else None)
        scores = {
            "decoder": pixel_match_scores(decoded[len(cfg.ks) + i], gal_x.numpy(), scene.gallery.person, people),
            "matcher": matcher_scores(embedding, gal_clean, scene.gallery.person, per_person[i], people),
            "linear_probe": probe(per_person[i]),
        }
        for attack, s in scores.items():
            out[attack]["top1"].append(topk_hits(s, truth, 1))
            out[attack]["top5"].append(topk_hits(s, truth, 5))
    return out
