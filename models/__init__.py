"""The layered-CNN zoo: models as ordered block lists, exported block by block to ONNX.

Importing this package is torch-free (it holds the registry and the bundled artifacts a device
needs); building a model imports torch from the architecture modules only when asked.
"""

from models.registry import REGISTRY, ModelEntry, known_models

__all__ = ["REGISTRY", "ModelEntry", "known_models"]
