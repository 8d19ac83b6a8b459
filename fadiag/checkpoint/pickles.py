"""Pickle streams read without running them: walk the opcodes under an opcode budget, list the globals they
would import, and class each one as dangerous (can run code), allowed (torch's weights-only loader admits it)
or unknown (docs/safety.md)."""

from __future__ import annotations

from dataclasses import dataclass

from . import limits as _ck  # read at call time (callers may lower them)

from .raw import short


class _ScanBudget(Exception):
    """The pickle is over a scan budget (the message names it)."""


@dataclass
class PickleScan:
    globals: list
    """"module.name" of every GLOBAL, INST and STACK_GLOBAL, in order of first use, once each."""
    ops: int
    pickles: int
    end: int
    error: str | None = None
    """Why the stream stopped parsing (truncated, unknown opcode), or None."""


_TABLE: list | None = None
# argument kinds and what an opcode does to the last pushes we track (for STACK_GLOBAL's two strings)
_NOARG, _FIXED, _LINE, _TWOLINES, _COUNTED = range(5)
_PUSH, _STR, _GET, _PUT, _MEMO, _SGLOBAL, _STOP, _NOP = range(8)


def _opcode_table() -> list:
    """byte -> (name, argument kind, fixed size or length width, signed length, role), from pickletools."""
    global _TABLE
    if _TABLE is None:
        import pickletools as pt

        table: list = [None] * 256
        widths = {pt.TAKEN_FROM_ARGUMENT1: 1, pt.TAKEN_FROM_ARGUMENT4: 4, pt.TAKEN_FROM_ARGUMENT4U: 4,
                  pt.TAKEN_FROM_ARGUMENT8U: 8}
        for o in pt.opcodes:
            a = o.arg
            if a is None:
                kind, n = _NOARG, 0
            elif o.name in ("GLOBAL", "INST"):
                kind, n = _TWOLINES, 0
            elif a.n == pt.UP_TO_NEWLINE:
                kind, n = _LINE, 0
            elif a.n >= 0:
                kind, n = _FIXED, a.n
            else:
                kind, n = _COUNTED, widths[a.n]
            role = (_STR if o.name in _STRING_OPS else _GET if o.name in ("GET", "BINGET", "LONG_BINGET")
                    else _PUT if o.name in ("PUT", "BINPUT", "LONG_BINPUT") else _MEMO if o.name == "MEMOIZE"
                    else _SGLOBAL if o.name == "STACK_GLOBAL" else _STOP if o.name == "STOP"
                    else _NOP if o.name in _NO_PUSH else _PUSH)
            table[ord(o.code)] = (o.name, kind, n, a is not None and a.n == pt.TAKEN_FROM_ARGUMENT4, role)
        _TABLE = table
    return _TABLE


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_NO_PUSH = {"FRAME", "PROTO", "POP", "POP_MARK"}


def scan_pickles(data: bytes, *, max_pickles: int = 1, max_ops: int | None = None,
                 more_follows: bool = False) -> PickleScan:
    """Walk the opcodes of up to ``max_pickles`` consecutive pickles in ``data`` (nothing is built or run)
    and list the globals they would import. Raises _ScanBudget past ``max_ops`` opcodes (default
    MAX_PICKLE_OPS), or when the pickles run past the end of ``data`` while ``more_follows`` (the stream is
    longer than the byte budget)."""
    data = bytes(data)
    n = len(data)
    found, count, pickles, pos, error, eof = _walk(data, max_pickles, _ck.MAX_PICKLE_OPS if max_ops is None
                                                   else max_ops)
    if eof:
        if more_follows:
            raise _ScanBudget(f"is over {n:,} bytes (the pickle scan limit)") from None
        error = f"truncated pickle stream (ends inside an opcode at byte {n})"
    if error is None and pickles == 0:
        error = "empty or truncated pickle stream"
    return PickleScan(globals=list(found), ops=count, pickles=pickles, end=pos, error=error)


def _walk(data: bytes, max_pickles: int, max_ops: int) -> tuple:
    """scan_pickles' opcode loop: (globals found, opcodes, pickles, end, error, ended inside a pickle).
    Only the last two pushes are tracked (a str, or None for anything else): what STACK_GLOBAL pops."""
    table, n, find = _opcode_table(), len(data), data.find
    pos = count = pickles = at_stop = 0
    found: dict = {}
    last2: list = [None, None]
    memo: dict = {}
    error = None
    try:
        while pickles < max_pickles and pos < n:
            entry = table[data[pos]]
            if entry is None:
                error = f"unknown pickle opcode 0x{data[pos]:02x} at byte {pos}"
                break
            name, kind, k, signed, role = entry
            pos += 1
            count += 1
            if count > max_ops:
                raise _ScanBudget(f"has over {max_ops:,} pickle opcodes (the scan limit)")
            value = None
            if kind == _FIXED or kind == _COUNTED:
                if pos + k > n:
                    raise EOFError
                if kind == _FIXED:
                    if role == _GET or role == _PUT:
                        value = int.from_bytes(data[pos:pos + k], "little")
                    pos += k
                else:
                    length = int.from_bytes(data[pos:pos + k], "little", signed=signed)
                    if length < 0:
                        error = f"negative length in {name} at byte {pos}"
                        break
                    pos += k
                    if pos + length > n:
                        raise EOFError
                    if role == _STR and length <= 4096:
                        value = data[pos:pos + length].decode("utf-8", "replace")
                    pos += length
            elif kind == _LINE:
                value, pos = _line_arg(data, pos, name, role)
            elif kind == _TWOLINES:
                e1 = find(b"\n", pos)
                e2 = find(b"\n", e1 + 1) if e1 >= 0 else -1
                if e2 < 0:
                    raise EOFError
                mod, attr = data[pos:e1].decode("utf-8", "replace"), data[e1 + 1:e2].decode("utf-8", "replace")
                found.setdefault(f"{mod}.{attr}", None)
                pos = e2 + 1
            if role <= _GET:  # _PUSH, _STR and _GET push one value
                last2[0], last2[1] = last2[1], (None if role == _PUSH else value if role == _STR else memo.get(value))
            elif role == _PUT or role == _MEMO:
                memo[value if role == _PUT else len(memo)] = last2[1]
            elif role == _SGLOBAL:
                a, b = last2
                found.setdefault(f"{a}.{b}" if isinstance(a, str) and isinstance(b, str)
                                 else "(unresolved STACK_GLOBAL)", None)
                last2[0], last2[1] = None, None
            elif role == _STOP:
                pickles, at_stop = pickles + 1, count
                last2[0], last2[1] = None, None
                memo.clear()
    except EOFError:
        return found, count, pickles, pos, None, True
    except (ValueError, KeyError) as e:
        error = f"malformed pickle ({short(e)})"
    # the data ended inside a pickle
    return found, count, pickles, pos, error, error is None and pickles < max_pickles and count > at_stop


def _line_arg(data: bytes, pos: int, name: str, role: int) -> tuple:
    """(value, new position) of an argument that runs to the end of the line (protocol 0 opcodes)."""
    e = data.find(b"\n", pos)
    if e < 0:
        raise EOFError
    raw, pos = data[pos:e], e + 1
    if role == _STR:
        return (raw.strip()[1:-1].decode("latin-1") if name == "STRING"
                else raw.decode("raw-unicode-escape", "replace")), pos
    if role == _GET or role == _PUT:
        return (int(raw) if raw.strip().isdigit() else -1), pos
    return None, pos


def pickle_globals(data: bytes, limit: int = 64) -> list[str]:
    """Every "module.name" a pickle stream would import (GLOBAL, INST, STACK_GLOBAL), read without running
    anything; up to ``limit`` consecutive pickles, within the scan budget."""
    try:
        return scan_pickles(data, max_pickles=limit).globals
    except _ScanBudget:
        return []


#: Modules whose every global can run code or touch the system (picklescan and modelscan class them alike).
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "pty", "runpy", "importlib", "pickle", "_pickle",
    "cPickle", "dill", "marshal", "ctypes", "multiprocessing", "code", "codeop", "webbrowser", "commands",
    "popen2", "platform", "asyncio", "types", "operator", "functools", "signal", "threading", "_thread", "pdb",
    "bdb", "timeit", "profile", "cProfile", "trace", "pydoc", "zipimport", "venv", "ensurepip", "pip",
    "setuptools", "distutils", "requests", "urllib", "urllib2", "http", "httplib", "ftplib", "smtplib",
    "telnetlib", "aiohttp", "tempfile", "io", "_io", "joblib", "torch.hub", "torch.jit", "torch.package",
    "torch.utils.cpp_extension", "torch._dynamo", "torch._inductor", "numpy.testing", "numpy.f2py",
    "numpy.distutils", "_posixsubprocess",
})
DANGEROUS_BUILTINS = frozenset({
    "eval", "exec", "execfile", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "input", "breakpoint", "apply", "file", "reload", "help", "exit", "quit", "memoryview",
})
DANGEROUS_NAMES = frozenset({
    "torch.load", "torch.serialization.load", "torch.serialization.pickle", "torch.storage._load_from_bytes",
    "torch._C._import_ir_module_from_package", "numpy.load", "numpy.lib.npyio.load", "pandas.read_pickle",
    "torch.serialization._load",
})


def _normalise(name: str) -> str:
    """Python 2 names as torch's unpickler maps them (``__builtin__.set`` -> ``builtins.set``)."""
    try:
        from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    except ImportError:  # pragma: no cover
        return name
    mod, _, attr = name.rpartition(".")
    if (mod, attr) in NAME_MAPPING:
        mod, attr = NAME_MAPPING[(mod, attr)]
    elif mod in IMPORT_MAPPING:
        mod = IMPORT_MAPPING[mod]
    return f"{mod}.{attr}"


_ALLOWED: frozenset | None = None


def _allowed_names() -> frozenset:
    global _ALLOWED
    if _ALLOWED is None:
        names: set = set()
        try:
            from torch import _weights_only_unpickler as wu

            names |= set(wu._get_allowed_globals())
            extra = _extra_safe_globals()
            names |= {x[1] if isinstance(x, tuple) else f"{x.__module__}.{x.__qualname__}" for x in extra}
        except Exception:  # pragma: no cover - torch internals moved: fall back to the rebuild essentials
            names |= {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                      "torch.FloatStorage", "torch.LongStorage", "torch.storage.UntypedStorage"}
        _ALLOWED = frozenset(names)
    return _ALLOWED


def classify_global(name: str) -> str:
    """"dangerous" (known to run code or touch the system), "allowed" (torch's weights-only loader admits
    it, or fadiag's numpy/Namespace additions) or "unknown" (anything else: arbitrary importable code)."""
    n = _normalise(name)
    if n in DANGEROUS_NAMES:
        return "dangerous"
    mod, _, attr = n.rpartition(".")
    if mod in ("builtins", "__builtin__") and attr in DANGEROUS_BUILTINS:
        return "dangerous"
    if any(mod == m or mod.startswith(m + ".") for m in DANGEROUS_MODULES):
        return "dangerous"
    if n in _allowed_names():
        return "allowed"
    return "unknown"


_SAFE_EXTRA: list | None = None


def _extra_safe_globals() -> list:
    """Globals torch's weights-only loader is told to allow, beyond its own list: numpy arrays, scalars and
    dtypes (plain data; object arrays are not among them) and argparse.Namespace (hyperparameters)."""
    global _SAFE_EXTRA
    if _SAFE_EXTRA is None:
        import argparse

        import numpy as np

        out: list = [argparse.Namespace, np.ndarray, np.dtype]
        try:
            from numpy._core import multiarray as ma  # numpy 2
        except ImportError:  # pragma: no cover - numpy 1
            from numpy.core import multiarray as ma  # type: ignore
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            out += [(ma._reconstruct, f"{mod}._reconstruct"), (ma.scalar, f"{mod}.scalar")]
        dtypes = getattr(np, "dtypes", None)
        for name in dir(dtypes) if dtypes is not None else ():
            cls = getattr(dtypes, name)
            if name.endswith("DType") and isinstance(cls, type) and name not in ("ObjectDType", "VoidDType"):
                out.append(cls)
        _SAFE_EXTRA = out
    return _SAFE_EXTRA


# ------------------------------------------------------------------------------ globals: find and class

