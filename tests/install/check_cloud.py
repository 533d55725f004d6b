"""Run by ``make install-check`` in a ``pip install '.[cloud]'`` virtual environment: every
scheduler module imports (scipy/HiGHS present), the registry opens (SQLAlchemy present) and neither
torch nor matplotlib is installed.

Exits non-zero, with one line saying why, if anything is missing or wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys


def main() -> int:
    present = [m for m in ("torch", "matplotlib") if importlib.util.find_spec(m) is not None]
    if present:
        print(f"cloud install check: {', '.join(present)} should not be installed by the cloud extra")
        return 1
    import scheduling

    names = ["scheduling"] + [m.name for m in pkgutil.walk_packages(scheduling.__path__, "scheduling.")]
    for name in names:
        importlib.import_module(name)
    import cloud_server.service  # noqa: F401 — the cloud itself imports too
    from cloud_server.registry import Registry

    Registry(":memory:").close()  # the registry's storage layer (SQLAlchemy, from the cloud extra) opens and migrates

    print(f"cloud install: {len(names)} scheduler modules import ({', '.join(n for n in names if n.count('.') == 1)}); "
          f"the registry opens; no torch, no matplotlib")
    return 0


if __name__ == "__main__":
    sys.exit(main())
