"""The runtime must import and run partitions where torch cannot be imported (a Raspberry Pi)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "onnx"):
                raise ImportError(f"{name} is blocked: this process stands in for a torch-free device")

    sys.meta_path.insert(0, NoTorch())
    try:
        import torch
    except ImportError:
        pass
    else:
        sys.exit("torch imported despite the block")
    """
)


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_partition_runs_where_torch_import_fails() -> None:
    proc = run_without_torch(
        """
        import numpy as np
        from ecd.zoo import load_manifest
        from ecd.manifest import load_heldout
        from ecd.partition import Partition

        m = load_manifest("digits_cnn")
        held = load_heldout(m)
        x = m.input.preprocess(held.images[:16])
        activation = Partition(m, 0, 3).run(x)
        logits = Partition(m, 3, m.n_blocks).run(activation)
        assert (logits.argmax(1) == held.torch_logits[:16].argmax(1)).all()
        assert not any(k.split(".")[0] in ("torch", "onnx") for k in sys.modules), "torch got imported"
        print("RAN", logits.shape)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "RAN (16, 10)" in proc.stdout


def test_cli_check_runs_without_torch_and_build_says_what_is_missing() -> None:
    proc = run_without_torch(
        """
        from ecd_cli.main import main
        rc = main(["models", "check", "digits_cnn", "--runs", "1", "--samples", "32"])
        print("CHECK_RC", rc)
        rc = main(["models", "build", "resnet18"])
        print("BUILD_RC", rc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "CHECK_RC 0" in proc.stdout
    assert "all 7 split points match torch" in proc.stdout
    assert "BUILD_RC 2" in proc.stdout
    assert "ecd-runtime[models]" in proc.stderr
    assert "Traceback" not in proc.stderr
