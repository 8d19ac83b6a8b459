"""The YAML model spec -> validated, frozen dataclasses.

Validation errors name the file and the key path (``spec.yaml: data.batch_size: expected an integer,
got 'x'``); unknown keys name the nearest valid key. Only ``yaml.safe_load`` is used. Relative paths in
a spec are resolved against the spec file's folder.

Spec discovery (DESIGN.md): ``--spec`` > a sidecar ``<ckpt stem>.yaml`` (or .yml) beside the checkpoint >
a plain dict stored in the checkpoint under ``fadiag_spec``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import SpecError

MAX_SPEC_BYTES = 1024 * 1024
#: data.batch_size when neither the spec nor --batch-size sets it ((c) is calibrated at this size).
DEFAULT_BATCH_SIZE = 128


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    """Built-in name (resmlp, vit_mini, gsnn, multihead) or "package.module:Class" (imports user code)."""
    args: dict = field(default_factory=dict)
    """Keyword arguments of the architecture's constructor."""
    args_from: Optional[str] = None
    """Checkpoint key (dotted for nesting) whose dict gives the constructor's arguments (nanoGPT's model_args,
    Lightning's hyper_parameters); ``args`` given in the spec win (fadiag.models.construct)."""
    config_class: Optional[str] = None
    """"module:Class" of the one config object the constructor takes (nanoGPT's GPTConfig): built from the
    arguments, then passed as the constructor's only argument. A dataclass or a PretrainedConfig."""


@dataclass(frozen=True)
class CheckpointSpec:
    state_dict: str = "auto"
    """Key holding the state dict ("auto": a flat dict of tensors, or model/state_dict/... ). Dotted for nesting."""
    strip_prefix: str = "auto"
    """Prefix removed from every key ("auto": model./module./_orig_mod. when all keys share it; "": none)."""


@dataclass(frozen=True)
class DataSpec:
    source: str = "npz"
    """npz | pt | digits (scikit-learn's bundled 8x8 digits, x/16 as (N, 64) float32) | synthetic."""
    path: Optional[str] = None
    """File with arrays x, y (npz or pt); resolved relative to the spec file."""
    train_path: Optional[str] = None
    """Training split (x, y) used by ``--frozen-baseline train``."""
    batch_size: Optional[int] = None
    """Rows per batch; default 128, or for source digits what fits its 360-row test split (360 // batches)."""
    batches: int = 8
    shuffle: bool = False
    """false: batch i = rows [i*B, (i+1)*B). true: a seeded permutation first."""
    seed: int = 0
    n_samples: Optional[int] = None
    """synthetic only: number of rows (default batches * batch_size)."""
    labels_shifted: Any = "auto"
    """loss lm: true (y[:, t] is the token after x[:, t], nanoGPT's batches), false (y = x: fadiag shifts) or
    auto (measured on the first batch; exit 2 when it cannot tell)."""


@dataclass(frozen=True)
class AuditSpec:
    """The audit: section.

    method_name: the learning rule's name in the report (default: the checkpoint's name).
    notes: free text carried into the report.
    headline_acc: the accuracy the paper reports (default: measured on the eval batches).
    frozen_baseline_acc: accuracy with the blocks frozen at init (else --frozen-baseline, or unknown).
    thresholds: {name: value} over the defaults; --threshold overrides these.
    stability_layer: the layer of the cross-batch stability check (d) (default: the last).
    growth: the (a) variant: ratio_to_h0 (max_l |h_l|/|h_0|, the published report) or per_block
        (max_l |h_{l+1}|/|h_l|).
    median: the per-layer median convention: lower (torch.median, the reference protocol's) or midpoint
        (numpy's).
    """

    method_name: str = ""
    notes: str = ""
    headline_acc: Optional[float] = None
    frozen_baseline_acc: Optional[float] = None
    thresholds: dict = field(default_factory=dict)
    stability_layer: Optional[int] = None
    growth: str = "ratio_to_h0"
    median: str = "lower"


@dataclass(frozen=True)
class CreditSpec:
    signal: str = "bp"
    """bp | dfa | fa | value | tensors."""
    feedback: str = "feedback"
    """Checkpoint key holding the training-time feedback matrices (dfa/fa)."""
    init_checkpoint: Optional[str] = None
    value: Optional[str] = None
    """Checkpoint key holding the value net's state dict (signal value / bridge residual R_l)."""
    value_target: Optional[str] = None
    """Checkpoint key holding the EMA target value net's state dict (bridge residual R_l)."""
    value_arch: str = "fadiag.models.value:ValueMLP"
    """Value net class; forward(h, t) -> (B,)."""
    value_args: dict = field(default_factory=dict)
    """Constructor arguments of the value net (e.g. {width: 64, hidden: 64, depth: 2, n_layers: 6})."""
    tensors: Optional[str] = None
    eps: float = 1e-3
    n_dirs: int = 32
    etas: list = field(default_factory=lambda: [0.01])
    bridge_k: int = 8
    bridge_lambda: float = 0.1
    bridge_sigma: float = 0.1
    seed: int = 0
    thresholds: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EdgesSpec:
    truth: Optional[str] = None
    method: str = "spearman"
    where: str = "pre"
    norm: str = "l2"
    agg: str = "sum"
    loss: str = "ce"
    penalty: float = 0.0
    scale_by_act_mean: bool = False
    row_chunk: Optional[int] = None
    held_out: Optional[str] = None
    known: Optional[str] = None
    """Edge list of the known function -> function edges (for penalty); default: the model's own."""
    ties: str = "average"
    """Spearman ties: average (textbook, scipy) or ordinal (upstream GSNN's argsort ranks, row-order dependent)."""


#: Upstream GSNN FunctionEdgeInferer's defaults, used for ``arch: gsnn-upstream`` where the spec sets none.
UPSTREAM_EDGE_DEFAULTS = {"gsnn-upstream": {"norm": "l1", "agg": "sum", "loss": "mse"}}


@dataclass(frozen=True)
class RelevanceSpec:
    feature_names: Optional[list] = None
    head_names: Optional[list] = None
    truth: Optional[dict] = None
    """{head name: [feature names it truly uses]}: adds a check that they rank first."""
    optimizer: str = "optimizer"
    """Checkpoint key holding a torch Adam/AdamW state_dict: effective step sizes lr / (sqrt(v_hat) + eps)."""


@dataclass(frozen=True)
class StreamSpec:
    """Where the residual stream is (docs/models.md). Written as a mapping, or as a string: ``auto`` or a
    preset left to detection. Keys left out come from the preset the model's layout matches."""

    preset: str = ""
    """"" (recognise the family from the model's layout) or "auto" (the single ModuleList of identical blocks)."""
    embed: Optional[str] = None
    """Module whose output is h_0 (required with residual: outside)."""
    blocks: Any = None
    """A ModuleList/Sequential path (its children are the blocks), or a list of such paths / block paths."""
    residual: Optional[str] = None
    """inside (block(h) returns h + f: timm, HF), outside (h + block(h): the reference contract) or auto."""
    output_index: Optional[int] = None
    """When a block returns a tuple, which element is the stream."""
    readout: Any = None
    """Module paths applied after the last block, in order, "model" (the model's own forward), or "probe" (a
    linear probe fitted on data.train_path's pooled h_L: fadiag.stream.probe)."""
    pool: Optional[str] = None
    """cls | mean | last | none: how a (B, T, d) state becomes one vector per sample."""
    prefix_tokens: Optional[int] = None
    """Tokens skipped by pool: mean (timm's num_prefix_tokens)."""


@dataclass(frozen=True)
class Spec:
    model: ModelSpec
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    data: DataSpec = field(default_factory=DataSpec)
    audit: AuditSpec = field(default_factory=AuditSpec)
    credit: CreditSpec = field(default_factory=CreditSpec)
    edges: EdgesSpec = field(default_factory=EdgesSpec)
    relevance: RelevanceSpec = field(default_factory=RelevanceSpec)
    stream: Optional[StreamSpec] = None
    """The residual stream's module paths (None: recognised from the model's layout)."""
    loss: Optional[str] = None
    """ce (classification) | lm (next-token CE on (B, T) labels) | mse; None: the family's default (ce)."""
    base_dir: str = "."
    """Folder that relative paths are resolved against (the spec file's folder)."""
    origin: str = "<spec>"
    """Where the spec came from: a file path, or "<ckpt>:fadiag_spec"."""

    def resolve(self, rel: str | None) -> str | None:
        if rel is None:
            return None
        p = Path(rel)
        return str(p if p.is_absolute() else Path(self.base_dir) / p)


#: the spec's sections (its fields that hold one), by name
_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Spec) if f.default_factory is not dataclasses.MISSING
             or f.name == "model"}
_SECTIONS["model"] = ModelSpec


def _fail(origin: str, keypath: str, msg: str) -> SpecError:
    return SpecError(f"{keypath}: {msg}" if keypath else msg, source=origin)


def _unknown(origin: str, keypath: str, key: Any, valid: list[str]) -> SpecError:
    near = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(valid)})"
    where = f"{keypath}.{key}" if keypath else str(key)
    return SpecError(f"{where}: unknown key{hint}", source=origin)


def _coerce(value: Any, tp: Any, origin: str, keypath: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float where a float is due)."""
    o = typing.get_origin(tp)
    if o is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], origin, keypath)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(origin, keypath, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(origin, keypath, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = float(value)
            if not math.isfinite(v):
                raise _fail(origin, keypath, f"expected a finite number, got {value!r}")
            return v
        raise _fail(origin, keypath, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(origin, keypath, f"expected a string, got {value!r}")
    if tp is dict or o is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _fail(origin, keypath, f"expected a mapping, got {type(value).__name__}")
    if tp is list or o is list:
        if isinstance(value, list):
            return list(value)
        raise _fail(origin, keypath, f"expected a list, got {type(value).__name__}")
    return value


def _build(cls: type, raw: Any, origin: str, keypath: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(origin, keypath, f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        if k not in fields:
            raise _unknown(origin, keypath, k, list(fields))
        kwargs[k] = _coerce(v, hints[k], origin, f"{keypath}.{k}" if keypath else k)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _fail(origin, keypath, f"missing required key {missing[0]!r}")
    return cls(**kwargs)


def parse_spec(raw: Any, *, origin: str = "<spec>", base_dir: str = ".") -> Spec:
    """Validate a spec mapping (as loaded from YAML) into a Spec."""
    if not isinstance(raw, dict):
        raise SpecError(f"top level must be a mapping, got {type(raw).__name__}", source=origin)
    for k in raw:
        if k not in _SECTIONS and k not in ("stream", "loss"):
            raise _unknown(origin, "", k, list(_SECTIONS) + ["stream", "loss"])
    if "model" not in raw:
        raise SpecError("missing required section 'model'", source=origin)
    parts = {name: _build(cls, raw.get(name), origin, name) for name, cls in _SECTIONS.items() if name in raw}
    if raw.get("stream") is not None:
        st = raw["stream"]
        parts["stream"] = StreamSpec(preset=st) if isinstance(st, str) else _build(StreamSpec, st, origin, "stream")
    if raw.get("loss") is not None:
        parts["loss"] = _coerce(raw["loss"], str, origin, "loss")
    spec = Spec(**parts, base_dir=base_dir, origin=origin)
    ups = UPSTREAM_EDGE_DEFAULTS.get(spec.model.arch)
    if ups:
        given = raw.get("edges") or {}
        spec = dataclasses.replace(spec, edges=dataclasses.replace(
            spec.edges, **{k: v for k, v in ups.items() if k not in given}))
    _check_values(spec)
    return spec


def _check_values(spec: Spec) -> None:
    o = spec.origin
    d = spec.data
    if d.source not in ("npz", "pt", "digits", "synthetic"):
        raise _fail(o, "data.source", f"expected one of npz, pt, digits, synthetic; got {d.source!r}")
    if d.n_samples is not None and not 1 <= d.n_samples <= 10_000_000:
        raise _fail(o, "data.n_samples", "must be in 1..10,000,000")
    if d.labels_shifted not in (True, False, "auto"):
        raise _fail(o, "data.labels_shifted", f"expected true, false or auto, got {d.labels_shifted!r}")
    bs = DEFAULT_BATCH_SIZE if d.batch_size is None else d.batch_size
    if bs < 1 or d.batches < 1:
        raise _fail(o, "data", "batch_size and batches must be positive")
    if bs * d.batches > 10_000_000:
        raise _fail(o, "data", "batches * batch_size over the 10,000,000-row limit")
    from .registry import families, resolve

    for fam in families():  # each family checks its own section
        if fam.spec_check:
            resolve(fam.spec_check)(spec)
    _check_stream(spec)


def check_audit(spec: Spec) -> None:
    o = spec.origin
    if spec.audit.growth not in ("ratio_to_h0", "per_block"):
        raise _fail(o, "audit.growth", f"expected ratio_to_h0 or per_block, got {spec.audit.growth!r}")
    if spec.audit.median not in ("lower", "midpoint"):
        raise _fail(o, "audit.median", f"expected lower or midpoint, got {spec.audit.median!r}")


def check_edges(spec: Spec) -> None:
    o = spec.origin
    if spec.edges.ties not in ("average", "ordinal"):
        raise _fail(o, "edges.ties", f"expected average or ordinal, got {spec.edges.ties!r}")
    if spec.edges.method not in ("spearman", "pearson"):
        raise _fail(o, "edges.method", f"expected spearman or pearson, got {spec.edges.method!r}")

def _check_stream(spec: Spec) -> None:
    o, st = spec.origin, spec.stream
    if spec.loss is not None and spec.loss not in ("ce", "lm", "mse"):
        raise _fail(o, "loss", f"expected ce, lm or mse; got {spec.loss!r}")
    if st is None:
        return
    if st.preset not in ("", "auto"):
        raise _fail(o, "stream", f"expected a mapping or 'auto', got {st.preset!r}")
    for key, v in (("blocks", st.blocks), ("readout", st.readout)):
        if v is not None and not (isinstance(v, str) or (isinstance(v, list) and v and
                                                         all(isinstance(p, str) for p in v))):
            raise _fail(o, f"stream.{key}", f"expected a module path or a list of them, got {v!r}")
    checks = (("residual", st.residual, ("inside", "outside", "auto")), ("pool", st.pool, ("cls", "mean", "last", "none")))
    for key, v, ok in checks:
        if v is not None and v not in ok:
            raise _fail(o, f"stream.{key}", f"expected one of {', '.join(ok)}; got {v!r}")
    for key, v in (("output_index", st.output_index), ("prefix_tokens", st.prefix_tokens)):
        if v is not None and not 0 <= v <= 4096:
            raise _fail(o, f"stream.{key}", f"must be in 0..4096, got {v}")


def load_spec_file(path: str | Path, defaults: dict | None = None) -> Spec:
    """A YAML spec file -> Spec. ``defaults``: top-level sections taken where the file has none (a Hugging
    Face model folder supplies ``model`` from its config.json)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError("no such spec file", source=str(path))
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"spec file over the {MAX_SPEC_BYTES}-byte limit", source=str(path))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError("spec is not UTF-8 text", source=str(path)) from None
    try:
        raw = safe_yaml(text)
    except RecursionError:
        raise SpecError("YAML nested too deeply", source=str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"invalid YAML{where}: {problem}", source=str(path)) from None
    if defaults and isinstance(raw, dict):
        raw = {**{k: v for k, v in defaults.items() if k not in raw}, **raw}
    return parse_spec(raw, origin=str(path), base_dir=str(p.parent))


try:  # A safe loader that refuses aliases: alias "billion laughs" bombs cannot expand.
    import yaml as _yaml

    class _NoAliasLoader(_yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: D401
            if self.check_event(_yaml.events.AliasEvent):
                event = self.peek_event()
                raise _yaml.composer.ComposerError(None, None, "YAML aliases are not allowed in a spec", event.start_mark)
            return super().compose_node(parent, index)
except ImportError:  # pragma: no cover - pyyaml is a hard dependency
    _NoAliasLoader = None  # type: ignore


def safe_yaml(text: str):
    """``yaml.safe_load`` that also refuses aliases (a billion-laughs spec): the one YAML reader for specs."""
    import yaml

    return yaml.load(text, Loader=_NoAliasLoader)  # _NoAliasLoader is a SafeLoader subclass


def discover_spec(ckpt_path: str, content: Any = None, spec_path: str | None = None, *,
                  defaults: dict | None = None, defaults_origin: str | None = None) -> Spec:
    """Spec discovery, first hit wins: explicit path, sidecar <stem>.yaml/.yml, embedded ``fadiag_spec``, then
    ``defaults`` alone (a Hugging Face model folder's model section, with origin ``defaults_origin``).
    ``defaults`` also fills the sections a spec file leaves out."""
    if spec_path:
        return load_spec_file(spec_path, defaults)
    p = Path(ckpt_path)
    for suffix in (".yaml", ".yml") if p.name else ():  # "." has no name to put a suffix on
        side = p.with_suffix(suffix)
        if side.is_file():
            return load_spec_file(side, defaults)
    if defaults:
        return parse_spec(dict(defaults), origin=defaults_origin or str(ckpt_path), base_dir=str(p))
    if isinstance(content, dict) and isinstance(content.get("fadiag_spec"), dict):
        sp = parse_spec(content["fadiag_spec"], origin=f"{ckpt_path}:fadiag_spec", base_dir=str(p.parent))
        # A spec stored inside the checkpoint is data from whoever made the file, not the user's word:
        # it may only name built-in classes (importing user code stays opt-in, via --spec or a sidecar).
        from .models import BUILTIN

        if sp.model.config_class:
            raise SpecError("model.config_class: an embedded spec may not name a config class (it would import "
                            "code); pass --spec to use your own", source=sp.origin)
        for key, arch in (("model.arch", sp.model.arch), ("credit.value_arch", sp.credit.value_arch)):
            if arch not in BUILTIN and arch != CreditSpec.value_arch:
                raise SpecError(f"{key}: an embedded spec may only name built-in architectures "
                                f"({', '.join(BUILTIN)}), not {arch!r}; pass --spec to use your own class",
                                source=sp.origin)
        return sp
    raise SpecError(
        f"no spec found: pass --spec, put {p.with_suffix('.yaml').name} beside the checkpoint, "
        "or store a 'fadiag_spec' dict in it",
        source=str(ckpt_path),
    )
