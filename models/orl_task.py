"""The face / no-face task on the ORL faces (issue 35): a people-counting camera that must say
whether a face is present and must not reveal *whose* it is.

Faces: :mod:`models.orl_faces` (398 photographs of 40 people), downsampled to 32 x 32 grey (the
92 x 112 portrait squeezed to a square: the task and the attacks see the same pixels, and a small
input keeps training on a shared CPU under minutes). Non-faces: random square crops of photographs
scikit-image ships (none shows a face; ``astronaut`` does, so it is not used), grey, 32 x 32.

Who is who. :func:`models.orl_faces.split_people` gives 20 *attacker* people and 20 *evaluated*
people. The task model is trained on the attacker people's faces (the public side: the model's owner
and the attacker both hold these photos) and on crops of :data:`TRAIN_PHOTOS`; every figure is
measured on the evaluated people, whom neither the model nor an attack saw in training, and on
crops of :data:`HELDOUT_PHOTOS`. Each evaluated person's photographs are split again: the first
:data:`GALLERY_SHOTS` are the attacker's *gallery* (other photos of the person, e.g. from a social
network), the rest are the *probes* (what the camera captures).

Numpy and scikit-image only (no torch): ``ecd privacy export`` builds the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.orl_faces import load, split_people

SIZE = 32
TRAIN_PHOTOS = ("camera", "coins", "moon", "brick", "cat", "immunohistochemistry", "hubble_deep_field")
HELDOUT_PHOTOS = ("coffee", "chelsea", "rocket", "text", "gravel", "retina")
GALLERY_SHOTS = 5  # the first 5 photographs of each evaluated person are the attacker's gallery
PEOPLE = ("attacker", "evaluated")


@dataclass(frozen=True)
class TaskImages:
    """uint8 images (n, 32, 32), label 1 = face, the person (-1 for a non-face) and the ORL shot."""

    images: np.ndarray
    labels: np.ndarray
    person: np.ndarray
    shot: np.ndarray

    def faces(self) -> TaskImages:
        return self.subset(self.labels == 1)

    def subset(self, mask: np.ndarray) -> TaskImages:
        return TaskImages(self.images[mask], self.labels[mask], self.person[mask], self.shot[mask])


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def photo_crops(names: tuple[str, ...], n: int, seed: int) -> np.ndarray:
    """``n`` grey SIZE x SIZE crops (uint8), cycling over the named scikit-image photographs."""
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    grey = []
    for name in names:
        photo = np.asarray(getattr(data, name)(), dtype=np.float64)
        if photo.ndim == 3:
            photo = rgb2gray(photo[..., :3])
        grey.append(photo / (255.0 if photo.max() > 1.0 else 1.0))
    out = np.empty((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        photo = grey[i % len(grey)]
        side = int(rng.uniform(0.15, 0.6) * min(photo.shape))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        out[i] = _to_uint8(resize(photo[y : y + side, x : x + side], (SIZE, SIZE), anti_aliasing=True))
    return out


def task_images(people: str, seed: int = 0) -> TaskImages:
    """The faces of the ``people`` side ("attacker" or "evaluated") and as many non-face crops."""
    if people not in PEOPLE:
        raise ValueError(f"people: expected one of {', '.join(PEOPLE)}, got {people!r}")
    from skimage.transform import resize

    orl = load()
    attacker, evaluated = split_people(orl)
    mask = attacker if people == "attacker" else evaluated
    faces = np.stack([_to_uint8(resize(im / 255.0, (SIZE, SIZE), anti_aliasing=True)) for im in orl.images[mask]])
    photos, crop_seed = (TRAIN_PHOTOS, seed) if people == "attacker" else (HELDOUT_PHOTOS, seed + 1)
    crops = photo_crops(photos, len(faces), crop_seed)
    n = len(faces)
    return TaskImages(
        images=np.concatenate([faces, crops]),
        labels=np.r_[np.ones(n), np.zeros(n)].astype(np.int64),
        person=np.r_[orl.person[mask], -np.ones(n)].astype(np.int64),
        shot=np.r_[orl.shot[mask], -np.ones(n)].astype(np.int64),
    )


def gallery_and_probes(evaluated: TaskImages) -> tuple[TaskImages, TaskImages]:
    """The evaluated people's faces split into the attacker's gallery and the camera's probes."""
    faces = evaluated.faces()
    rank = np.array([np.sum((faces.person == p) & (faces.shot < s)) for p, s in zip(faces.person, faces.shot)])
    gallery = rank < GALLERY_SHOTS
    return faces.subset(gallery), faces.subset(~gallery)
