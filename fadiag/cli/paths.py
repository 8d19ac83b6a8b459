"""The files a command reads and writes, checked before any work is done: outputs are regular files (or none
yet) in an existing, writable folder, never one of the command's inputs nor another of its outputs; inputs are
never pipes, sockets or devices (reading one could block forever).

"Inputs" are every file the run will read that can be known before it starts (:func:`run_inputs`): the files
named on the command line, every file inside a checkpoint folder, the sidecar specs beside each checkpoint,
and every file a spec names (``data.path``, ``credit.init_checkpoint``, ``edges.truth``, a model argument, ...).
They are compared with each output through symlinks and hard links (same resolved path, or same device and
inode)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

#: parameters that name files a command reads
INPUT_PARAMS = ("checkpoints", "checkpoint", "more", "spec", "data", "init", "tensors", "truth", "held_out",
                "report_file", "reports", "baseline", "paths", "calibration", "healthy", "degenerate")
#: parameters that name files a command writes, with their option
OUTPUT_PARAMS = (("output", "--output"), ("plot", "--plot"), ("matrix", "--matrix"), ("edges_out", "--edges"),
                 ("resume", "--resume"))


def check_output_path(path: str, option: str) -> Path:
    """An output path must name a regular file (or none yet) in an existing, writable folder: checked before
    any work is done."""
    if not str(path).strip():
        raise InputError("empty path", source=option)
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory, not a file", source=f"{option} {path}")
    if p.exists() and not p.is_file():
        raise InputError("is not a regular file (a pipe or device); write to a file", source=f"{option} {path}")
    folder = _resolve(p, f"{option} {path}").parent
    if not folder.is_dir():
        raise InputError("folder does not exist", source=f"{option} {path}")
    if not os.access(folder, os.W_OK):
        raise InputError("folder is not writable", source=f"{option} {path}")
    try:  # os.access says yes to root everywhere (/sys, /proc, read-only mounts): try to create a file there
        import tempfile

        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fadiag-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot create a file in that folder ({e.strerror or type(e).__name__})",
                         source=f"{option} {path}") from None
    return p


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename: never a partial file."""
    from ..run.atomic import write_text

    check_output_path(path, "--output")
    write_text(path, text)


def _resolve(p: Path, where: str) -> Path:
    """``p.resolve()``, with a symlink loop as bad input (Python raises RuntimeError or OSError for it)."""
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        raise InputError("symlink loop (the path cannot be resolved)", source=where) from None


def _check_input_path(p: Path, where: str) -> Path:
    """An input must not be a pipe, socket or device (reading one could block forever): said up front."""
    import stat

    r = _resolve(p, where)
    try:
        mode = os.stat(r).st_mode
    except OSError:
        return r  # missing: the reader says "no such file"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError("not a regular file (a pipe, socket or device)", source=where)
    return r


#: spec files and folders are looked through for the files they name, within these bounds
MAX_LISTED = 100_000
MAX_SPEC_STRINGS = 10_000
SPEC_SUFFIXES = (".yaml", ".yml")


def _identity(p: Path):
    try:
        st = os.stat(p)
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


def _spec_files(spec: Path) -> list:
    """The files a spec names: every string in it that, taken relative to the spec's folder, is a file. A spec
    that cannot be read names none here (the run says why)."""
    from ..spec import MAX_SPEC_BYTES, safe_yaml

    try:
        if not spec.is_file() or spec.stat().st_size > MAX_SPEC_BYTES:
            return []
        raw = safe_yaml(spec.read_text(encoding="utf-8"))
    except Exception:
        return []
    out, stack, n = [], [raw], 0
    while stack and n < MAX_SPEC_STRINGS:
        node = stack.pop()
        n += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and node.strip() and "\0" not in node and len(node) < 4096:
            q = Path(node) if Path(node).is_absolute() else spec.parent / node
            try:
                if q.is_file():
                    out.append(q)
            except OSError:
                pass
    return out


def run_inputs(ctx, named: list) -> set:
    """Every file the run will read that is known before it starts (see the module docstring): resolved paths
    and (device, inode) pairs. ``named``: the files named on the command line."""
    files = list(named)
    specs = [Path(str(ctx.params["spec"]))] if ctx.params.get("spec") else []
    for name in ("checkpoints", "checkpoint", "more"):
        v = ctx.params.get(name)
        for x in (v if isinstance(v, (list, tuple)) else [v]) if v else []:
            p = Path(str(x))
            if p.name:
                specs += [p.with_suffix(sfx) for sfx in SPEC_SUFFIXES]  # a sidecar, found or not
            if p.is_dir():
                for i, q in enumerate(q for q in p.rglob("*") if q.is_file()):
                    if i >= MAX_LISTED:
                        break
                    files.append(q)
                    if q.suffix in SPEC_SUFFIXES:
                        specs.append(q)
    for sp in specs:
        files.append(sp)
        files += _spec_files(sp)
    out = set()
    for f in files:
        try:
            out.add(f.resolve())
        except (RuntimeError, OSError):
            continue
        ident = _identity(f)
        if ident is not None:
            out.add(ident)
    return out


def preflight(ctx) -> None:
    """Before a command does any work: check every file it will read or write (see the module docstring), and
    that a --plot can be drawn (its suffix, the 'plot' extra)."""
    named = []
    for name in INPUT_PARAMS:
        v = ctx.params.get(name)
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if x:
                _check_input_path(Path(str(x)), str(x))
                named.append(Path(str(x)))
    inputs = run_inputs(ctx, named) if any(ctx.params.get(n) is not None for n, _ in OUTPUT_PARAMS) else set()
    seen = {}
    for name, opt in OUTPUT_PARAMS:
        v = ctx.params.get(name)
        if v is None:
            continue
        check_output_path(str(v), opt)
        r = _resolve(Path(str(v)), f"{opt} {v}")
        if r in inputs or _identity(r) in inputs:
            raise InputError("is also an input of this run (given, found beside a checkpoint or named by its "
                             "spec); refusing to overwrite it", source=f"{opt} {v}")
        if r in seen:
            raise InputError(f"is also the {seen[r]} file", source=f"{opt} {v}")
        seen[r] = opt
    if ctx.params.get("plot"):
        from ..render.plot import SUFFIXES, _plt

        if Path(str(ctx.params["plot"])).suffix.lower() not in SUFFIXES:
            raise InputError(f"plot file must end in {', '.join(SUFFIXES)}", source=f"--plot {ctx.params['plot']}")
        _plt()  # the 'plot' extra must be installed: say so now, not after the work
