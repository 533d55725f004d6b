"""The edge node: runs the intermediate blocks [split.device, split.edge) for many devices and
relays to the cloud. ``core`` is transport-free; ``service`` is its gRPC face."""
