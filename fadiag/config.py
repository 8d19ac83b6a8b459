"""Project configuration, the way linters do it.

Sources, first hit wins per option: command-line flag > environment variable ``FADIAG_<OPTION>`` >
config file > built-in default. The config file is the first of, in the working directory:

- ``fadiag.yaml`` (or ``.fadiag.yaml``): a mapping;
- ``pyproject.toml``: the ``[tool.fadiag]`` table.

Top-level keys are defaults for every command that has that option; a sub-table named after a
command (``audit``, ``credit``, ``edges``, ``relevance``, ...) holds that command's own options, including
its positional arguments (``checkpoints = [...]`` for audit, ``checkpoint = "..."`` for the others), so CI
can run ``fadiag audit`` with no paths. Keys may use dashes or underscores (``row-chunk``, ``row_chunk``).
``thresholds = {name = value}`` is accepted for ``--threshold name=value``.
Relative paths are used as written (relative to the working directory, where the config file lives).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .errors import InputError

CONFIG_NAMES = ("fadiag.yaml", ".fadiag.yaml")


def find_config(cwd: Path | None = None) -> tuple[dict, str | None]:
    """Return (raw config mapping, origin) or ({}, None)."""
    cwd = cwd or Path.cwd()
    for name in CONFIG_NAMES:
        p = cwd / name
        if p.is_file():
            import yaml

            try:
                raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise InputError(f"invalid YAML ({str(e).splitlines()[0]})", source=name) from None
            except UnicodeDecodeError:
                raise InputError("not UTF-8 text", source=name) from None
            except RecursionError:
                raise InputError("YAML nested too deeply", source=name) from None
            if not isinstance(raw, dict):
                raise InputError("config must be a mapping", source=str(p))
            return raw, name  # relative to the working directory: no host paths in reports
    pp = cwd / "pyproject.toml"
    if pp.is_file():
        try:
            import tomllib
        except ImportError:  # Python 3.10
            return {}, None
        try:
            data = tomllib.loads(pp.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise InputError(f"invalid TOML ({e})", source=str(pp)) from None
        raw = data.get("tool", {}).get("fadiag")
        if raw is not None:
            if not isinstance(raw, dict):
                raise InputError("[tool.fadiag] must be a table", source=str(pp))
            return raw, "pyproject.toml:[tool.fadiag]"
    return {}, None


def _norm_value(key: str, value: Any) -> tuple[str, Any]:
    key = key.replace("-", "_")
    if key == "thresholds" and isinstance(value, dict):
        return "threshold", [f"{k}={v}" for k, v in value.items()]
    return key, value


def build_default_map(raw: dict, commands: dict, origin: str) -> dict:
    """Turn a config mapping into click's ``default_map``, validating every key against the commands.

    ``commands``: {command name: set of its parameter names}.
    """
    all_params = set().union(*commands.values()) if commands else set()
    top, per = {}, {}
    for k, v in raw.items():
        if k in commands:
            if not isinstance(v, dict):
                raise InputError(f"{k}: expected a table of options", source=origin)
            per[k] = v
            continue
        nk, nv = _norm_value(k, v)
        if nk not in all_params:
            near = difflib.get_close_matches(nk, sorted(all_params) + sorted(commands), n=1)
            raise InputError(f"unknown option {k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""),
                             source=origin)
        top[nk] = nv
    out = {}
    for cmd, params in commands.items():
        m = {k: v for k, v in top.items() if k in params}
        for k, v in per.get(cmd, {}).items():
            nk, nv = _norm_value(k, v)
            if nk not in params:
                near = difflib.get_close_matches(nk, sorted(params), n=1)
                raise InputError(f"{cmd}.{k}: unknown option for 'fadiag {cmd}'"
                                 + (f" (did you mean {near[0]!r}?)" if near else ""), source=origin)
            m[nk] = nv
        if m:
            out[cmd] = m
    return out


#: Options that change how a report is shown or where it goes, never its numbers: not recorded.
PRESENTATION = frozenset({"format", "output", "quiet", "plot", "exit_zero"})


def sources(ctx) -> dict:
    """{option: "flag" | "env" | "config"} for every option not left at its built-in default."""
    # Compared by name: Typer vendors its own copy of click, with its own ParameterSource enum.
    names = {"COMMANDLINE": "flag", "ENVIRONMENT": "env", "DEFAULT_MAP": "config"}
    out = {}
    for p in ctx.command.params:
        if p.name in PRESENTATION:
            continue
        src = getattr(ctx.get_parameter_source(p.name), "name", None)
        if src in names:
            out[p.name] = names[src]
    return out
