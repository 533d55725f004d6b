"""Run by ``make install-check`` in the runtime-only virtual environment (``pip install .``, what a
phone or a Raspberry Pi gets): torch, scipy and SQLAlchemy are not installed there, its ``ecd``
command starts (building every command's flags imports each service's options), and a device agent streams
held-out images through a real edge node and cloud server on loopback. The device agent and the
edge node run here; the cloud server, which needs the ``cloud`` extra (its registry is SQLAlchemy),
runs as its own process from the Python named by ``ECD_CLOUD_PYTHON`` (the cloud install's).

Exits non-zero, with one line saying why, if anything is missing or wrong.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path


def main() -> int:
    present = [m for m in ("torch", "scipy", "matplotlib", "sqlalchemy") if importlib.util.find_spec(m) is not None]
    if present:
        print(f"runtime install check: {', '.join(present)} should not be installed in a runtime-only install")
        return 1
    # The installed `ecd` builds every command's flags at start: none of that may need the cloud extra.
    cli = subprocess.run([str(Path(sys.executable).parent / "ecd"), "--help"], capture_output=True, text=True, timeout=60)
    if cli.returncode != 0:
        print(f"runtime install check: `ecd --help` exited {cli.returncode}: {cli.stderr.strip().splitlines()[-1:]}")
        return 1
    cloud_python = os.environ.get("ECD_CLOUD_PYTHON", "")
    if not cloud_python:
        print("runtime install check: set ECD_CLOUD_PYTHON to a Python with the cloud extra (make install-check does)")
        return 1
    from device_agent.agent import AgentConfig, run_agent
    from ecd.launch import _start, _stop
    from ecd.transport.rpc import LoopThread, wait_healthy
    from edge_node.service import EdgeConfig, start_edge

    with tempfile.TemporaryDirectory(prefix="ecd-install-") as tmp:
        loop = LoopThread()
        cloud_proc, ready = _start([cloud_python, "-m", "ecd_cli", "cloud-server", "--insecure", "--port", "0", "--metrics-port", "-1",
                                    "--db", str(Path(tmp) / "cloud.sqlite3")], Path(tmp) / "cloud.log")
        cloud_port = ready["port"]
        edge = loop.run(start_edge(replace(EdgeConfig(), cloud=f"127.0.0.1:{cloud_port}", metrics_port=-1,
                                           model_dir=str(Path(tmp) / "edge"))))
        try:
            wait_healthy(f"127.0.0.1:{edge.port}")
            pages: dict[str, int] = {}

            def open_panel(ready: dict) -> None:  # the control panel, as packaged (page, Chart.js, state)
                import urllib.request

                for path in ("", "static/chart.umd.min.js", "api/state"):
                    with urllib.request.urlopen(ready["panel_url"] + path, timeout=10) as r:
                        pages[path or "/"] = len(r.read())

            report = run_agent(AgentConfig(cloud=f"127.0.0.1:{cloud_port}", frames=30, split=2, model_dir=str(Path(tmp) / "agent"),
                                           panel_port=0), on_ready=open_panel)
        finally:
            loop.run(edge.stop(0))
            _stop(cloud_proc, "cloud-server")
            loop.close()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "scipy", "matplotlib"))
    if report.errors or report.frames != 30 or heavy or len(pages) != 3 or pages["static/chart.umd.min.js"] < 100_000:
        print(f"runtime install check: {report.frames} frames, {report.errors} errors, imported {heavy}, panel served {pages}")
        return 1
    print(f"runtime install: no torch, no scipy, no SQLAlchemy; `ecd --help` starts; device agent -> edge node -> cloud: {report.frames} frames, "
          f"0 errors, accuracy {report.accuracy:.3f} at split {report.split_device}/{report.split_edge}; control panel served")
    return 0


if __name__ == "__main__":
    sys.exit(main())
