"""Shared by tests/deploy: where deploy/ is, finding the validators, running them, broken copies.

Every check runs a real validator on a file under deploy/ and is shown to fail on a deliberately
broken copy of it. A check skips only where its validator cannot be found, and says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent  # the dev extra's tools (check-jsonschema, hadolint, ...) live here


def tool(name: str, how: str) -> str:
    """The path of a validator, or skip the test naming it and how to install it."""
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip(f"validator {name!r} not found ({how})")


def run(args: list[str], cwd: Path | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False, **kw)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"{' '.join(proc.args)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def fails(proc: subprocess.CompletedProcess, *expect: str) -> None:
    """The validator refused the broken copy, and said why (each of ``expect`` is in its output)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{' '.join(proc.args)} accepted a broken file:\n{out}"
    for e in expect:
        assert e in out, f"expected {e!r} in the validator's output:\n{out}"


def broken_copy(src: Path, dst_dir: Path, old: str, new: str, name: str | None = None) -> Path:
    """A copy of ``src`` in ``dst_dir`` with ``old`` replaced by ``new`` (which must occur)."""
    text = src.read_text()
    assert old in text, f"{old!r} not in {src}: the broken copy would not be broken"
    dst = dst_dir / (name or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text.replace(old, new, 1))
    return dst


def resolve_config(cls: type, env_prefix: str, toml: Path | None = None, env: dict[str, str] | None = None):
    """Resolve ``cls`` (CloudConfig, EdgeConfig, AgentConfig) the way the ``ecd`` command does, from a
    TOML file and/or ECD_* variables: unknown keys and values of the wrong type raise ConfigError."""
    from ecd.config import resolve

    saved = {k: v for k, v in os.environ.items() if k.startswith(env_prefix)}
    for k in saved:
        del os.environ[k]
    os.environ.update(env or {})
    try:
        return resolve(cls, argparse.Namespace(config=str(toml) if toml else None), env_prefix)
    finally:
        for k in list(os.environ):
            if k.startswith(env_prefix):
                del os.environ[k]
        os.environ.update(saved)


def option_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


CONFIGS = {  # env prefix -> (module, class)
    "ECD_CLOUD_": ("cloud_server.service", "CloudConfig"),
    "ECD_EDGE_": ("edge_node.service", "EdgeConfig"),
    "ECD_AGENT_": ("device_agent.config", "AgentConfig"),
}


def config_class(prefix: str) -> type:
    import importlib

    module, name = CONFIGS[prefix]
    return getattr(importlib.import_module(module), name)


def check_env(env: dict[str, str]) -> None:
    """Every ECD_* variable names an option of its service, with a value of the option's type."""
    by_prefix: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        prefix = next((p for p in CONFIGS if key.startswith(p)), None)
        assert prefix, f"{key}: not an ECD_CLOUD_/ECD_EDGE_/ECD_AGENT_ option"
        cls = config_class(prefix)
        assert key[len(prefix):].lower() in option_names(cls), f"{key}: {cls.__name__} has no option {key[len(prefix):].lower()}"
        by_prefix.setdefault(prefix, {})[key] = str(value)
    for prefix, values in by_prefix.items():
        resolve_config(config_class(prefix), prefix, env=values)
