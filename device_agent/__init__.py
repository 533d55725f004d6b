"""The device agent: capture, choose the split with the ECD utility, run blocks [0, split.device),
stream. ``core`` is transport-free; ``service`` is its gRPC face; ``sources`` yields images."""
