"""ECD Runtime's shared, torch-free runtime: the records every tier exchanges (``ecd.types``),
errors, config, manifests and the model zoo, partitions, the tensor codec, the split decision,
metrics — and, in ``ecd.transport``, the one seam to gRPC.

Device agents and edge nodes install only this (plus onnxruntime, grpcio, numpy); building models
needs the ``models`` extra. See docs/architecture.md.
"""

__version__ = "0.1.0"
