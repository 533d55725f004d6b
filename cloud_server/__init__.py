"""The cloud server: runs blocks [b_e, n) and the task heads, and the control plane (registry,
model distribution, heads; later the allocation and placement schedulers)."""
