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

Trust is never taken from a file: a config naming ``trust-checkpoint``, ``trust-code`` or ``scheduler`` (which
would let a file in a pull-request checkout unpickle, import code or reach the network) is exit 2 with one line;
those come only from the command line. A ``spec`` named here is a *discovered* spec, like a sidecar: the code it
names is imported only with ``--trust-code`` on the command line (docs/safety.md).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .errors import InputError

CONFIG_NAMES = ("fadiag.yaml", ".fadiag.yaml")
#: options that grant trust or reach the network: only ever from the command line (key -> its flag)
COMMAND_LINE_ONLY = {"trust_checkpoint": "--trust-checkpoint", "trust_code": "--trust-code", "scheduler": "--scheduler"}


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


def _norm_value(key: str, value: Any, origin: str = "") -> tuple[str, Any]:
    key = key.replace("-", "_")
    if key in COMMAND_LINE_ONLY:
        flag = COMMAND_LINE_ONLY[key]
        raise InputError(f"{key.replace('_', '-')}: {flag} is taken only from the command line, never from a "
                         "config file (a file in the checkout must not grant trust or reach the network); remove "
                         f"it and pass {flag} yourself", source=origin)
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
        nk, nv = _norm_value(k, v, origin)
        if nk not in all_params:
            near = difflib.get_close_matches(nk, sorted(all_params) + sorted(commands), n=1)
            raise InputError(f"unknown option {k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""),
                             source=origin)
        top[nk] = nv
    out = {}
    for cmd, params in commands.items():
        m = {k: v for k, v in top.items() if k in params}
        for k, v in per.get(cmd, {}).items():
            nk, nv = _norm_value(k, v, origin)
            if nk not in params:
                near = difflib.get_close_matches(nk, sorted(params), n=1)
                raise InputError(f"{cmd}.{k}: unknown option for 'fadiag {cmd}'"
                                 + (f" (did you mean {near[0]!r}?)" if near else ""), source=origin)
            m[nk] = nv
        if m:
            out[cmd] = m
    return out


#: environment variables that would grant trust if fadiag read them: their presence alone is exit 2
TRUST_ENV = {"FADIAG_TRUST_CHECKPOINT": "--trust-checkpoint", "FADIAG_TRUST_CODE": "--trust-code"}


def check_trust_env(environ=None) -> None:
    """Trust is granted only by a flag on the command line: an environment variable that tries is exit 2."""
    import os

    env = os.environ if environ is None else environ
    for name, flag in TRUST_ENV.items():
        if env.get(name, "") != "":
            raise InputError(f"{flag} is taken only from the command line, never from the environment; unset "
                             f"{name} and pass {flag} yourself", source=name)


def given_on_command_line(ctx, name: str) -> bool:
    """Whether option ``name`` was typed on the command line (not the environment, the config or a default)."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


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
