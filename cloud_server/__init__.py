"""The cloud server: runs blocks [split.edge, n) and the task heads, and the control plane
(registry, model distribution, heads). ``core`` is transport-free; ``service`` is its gRPC face."""
