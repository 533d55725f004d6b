"""Building the layered-CNN zoo with torch: architectures as ordered block lists, trained where
needed, exported block by block to ONNX with a manifest.

Needs the ``models`` extra (torch). The runtime never imports this package: the zoo's names live in
:mod:`ecd.zoo`, the bundled artifacts in ``ecd/artifacts``.
"""
