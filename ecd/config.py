"""Flags, environment variables and a TOML file resolve to the same frozen dataclass.

Precedence: command-line flag > ``ECD_<SERVICE>_<FIELD>`` environment variable > ``--config`` file >
the dataclass default. Each field's help (and unit) comes from its ``metadata["help"]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from ecd.errors import ConfigError

T = TypeVar("T")

MiB = 2**20


def option(default: Any, help: str, was: tuple[str, ...] = (), command: Any = None) -> Any:  # noqa: A002 — mirrors argparse
    """A field of a service's config; ``was``: its former names, still taken as flags, environment
    variables and file keys so that deployments written before a rename keep working; ``command``:
    the default of the ``ecd`` command where it differs from the library's (a well-known port for
    the command an operator runs, an ephemeral one for code that embeds a service)."""
    metadata = {"help": help, "was": tuple(was), "command": command}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _names(f: dataclasses.Field) -> tuple[str, ...]:
    """The field's name, then its former names."""
    return (f.name, *f.metadata.get("was", ()))


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    parser.add_argument("--config", help="TOML file with any of the options below (flat keys)")
    for f in dataclasses.fields(cls):
        flags = ["--" + name.replace("_", "-") for name in _names(f)]
        kind = type(f.default)
        default = f.metadata.get("command")
        helptext = f"{f.metadata.get('help', '')} (default {f.default if default is None else default!r})"
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=helptext)
        elif kind is tuple:
            parser.add_argument(*flags, dest=f.name, default=None, nargs="+", help=helptext)
        else:
            parser.add_argument(*flags, dest=f.name, default=None, type=kind, help=helptext)


def _convert(cls_name: str, f: dataclasses.Field, value: Any, where: str) -> Any:
    kind = type(f.default)
    try:
        if kind is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(str(v) for v in value)
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{f.name} ({where}): expected {kind.__name__}, got {value!r}") from None


def resolve(cls: type[T], args: argparse.Namespace, env_prefix: str) -> T:
    """The command's config: its defaults (``command`` where a field has one), then the config file,
    the environment and the flags, each over the one before."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {name: f.metadata["command"] for name, f in names.items() if f.metadata.get("command") is not None}
    former = {old: f.name for f in dataclasses.fields(cls) for old in _names(f)[1:]}
    path = getattr(args, "config", None)
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"--config: no such file {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config: {path} is not valid TOML: {e}") from None
        for key, value in data.items():
            name = former.get(key, key)
            if name not in names:
                raise ConfigError(f"{key} (in {path}): unknown option; known: {', '.join(names)}")
            values[name] = _convert(cls.__name__, names[name], value, path)
    for name, f in names.items():
        for env_name in (f"{env_prefix}{n.upper()}" for n in reversed(_names(f))):  # the current name wins
            env = os.environ.get(env_name)
            if env is not None:
                values[name] = _convert(cls.__name__, f, env, f"env {env_name}")
    for name, f in names.items():
        value = getattr(args, name, None)
        if value is not None:
            values[name] = _convert(cls.__name__, f, value, "--" + name.replace("_", "-"))
    return cls(**values)
