"""ECD Runtime's shared, torch-free runtime: manifests, partitions, errors and the ``ecd`` CLI.

Device agents and edge nodes install only this (plus onnxruntime, grpcio, numpy); building models
needs the ``models`` extra.
"""

__version__ = "0.1.0"
