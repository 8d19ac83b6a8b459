"""checkpoint + spec -> subject: the model with its weights, the eval batches and the extras.

This is the only place where the three inputs meet; everything downstream sees a Subject.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .checkpoint import RawCheckpoint, find_state_dict, read_checkpoint
from .data import takes_tokens
from .errors import CheckpointError, DataError, SpecError
from .spec import Spec, discover_spec


@dataclass
class Subject:
    """A loaded checkpoint, ready for diagnostics.

    model: nn.Module with the checkpoint's weights, in eval mode, on ``device``.
    batches: list of disjoint eval (x, y) pairs (on the CPU; diagnostics move them).
    extras: the checkpoint's top-level entries other than the state dict (feedback matrices, ...).
    """

    model: Any
    batches: list
    spec: Spec
    checkpoint: RawCheckpoint
    state_dict: dict
    extras: dict = field(default_factory=dict)
    data_info: dict = field(default_factory=dict)
    device: str = "cpu"
    weight_dtypes: list = field(default_factory=list)
    batch_macs: int = 0
    """Multiply-adds of the weight layers in one forward pass of an eval batch (counted on the trial forward,
    scaled to the batch's rows): what the default thread count reads (fadiag.run.sweep.choose_threads)."""
    _view: Any = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return self.checkpoint.path

    @property
    def view(self):
        """The model's residual-stream view (fadiag.stream), resolved from the spec's stream: section or the
        model's layout on first use; the first pass over a batch settles it (residual inside/outside) and the
        families store the settled view back here."""
        if self._view is None:
            from .models.presets import resolve_view

            view = resolve_view(self.model, self.spec.stream, self.spec.loss, self.spec.data.labels_shifted)
            if view.stream.logits_from == "probe":  # a headless model: fit the documented probe first
                from .stream.probe import fit_probe

                view = fit_probe(view, self)
            self._view = view
        return self._view


def load(checkpoint: str, spec: str | Spec | None = None, *, trust: bool = False, trust_code: bool = False,
         spec_found: bool = False, data: str | None = None,
         batches: int | None = None, batch_size: int | None = None, seed: int | None = None,
         shuffle: bool | None = None, device: str = "cpu", need_data: bool = True,
         labels="class") -> Subject:
    """Read ``checkpoint`` safely, find its spec, build the model, load weights, load eval batches.

    checkpoint: a file (.pt/.pth/.bin, .safetensors, .npz), a Hugging Face model folder (config.json: the
    spec's model section comes from it, fadiag.checkpoint.hf) or an alberta-framework folder.
    labels: "class" (integer class labels) or "regression" (float targets), or a function of the Spec
    returning one of them (e.g. from edges.loss), decided once the spec is known.
    trust_code: let a spec that was found (not given) import the ``module:Class`` it names (--trust-code).
    spec_found: ``spec`` was not typed on the command line (FADIAG_SPEC, the project config): found, not given."""
    raw, sp = read_input(checkpoint, spec, trust=trust)
    if not spec or spec_found:  # not named on the command line: no user code without --trust-code
        from .models import require_trusted_code

        for key, arch in (("model.arch", sp.model.arch), ("credit.value_arch", sp.credit.value_arch),
                          ("model.config_class", sp.model.config_class or "")):
            if arch:
                require_trusted_code(arch, key=key, origin=sp.origin, trusted=trust_code,
                                     found="reached through FADIAG_SPEC or the project config" if spec_found else None)
    from .checkpoint.offline import check_offline_args

    check_offline_args(sp.model.args, origin=sp.origin)  # nothing a constructor would download (docs/safety.md)
    if trust_code:
        import dataclasses

        raw = dataclasses.replace(raw, trusted_code=True)
    model, sd, extras, args_note = _build_loaded(raw, sp, checkpoint, device)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values() if v.is_floating_point()})
    if callable(labels):
        labels = labels(sp)
    if labels == "class" and _lm_labels(sp, model):
        labels = "tokens"
    bl, info, macs = [], {}, 0
    if need_data:
        bl, info = load_batches(sp, model, data=data, batches=batches, batch_size=batch_size, seed=seed,
                                shuffle=shuffle, labels=labels)
        trial = bl[0][0][:2]
        macs = _trial_forward(model, trial.to(device), info.get("source", "data"))
        macs = macs * len(bl[0][0]) // max(1, len(trial))
        if labels == "tokens":
            _check_decoder_targets(model, bl, info.get("source", "data"))
    if args_note:
        info["model_args"] = args_note
    return Subject(model=model, batches=bl, spec=sp, checkpoint=raw, state_dict=sd, extras=extras,
                   data_info=info, device=device, weight_dtypes=dtypes, batch_macs=macs)


def read_input(checkpoint: str, spec: str | Spec | None, *, trust: bool) -> tuple:
    """(RawCheckpoint, Spec): the checkpoint read safely and its spec discovered (fadiag.spec.discover_spec)."""
    from pathlib import Path

    if not Path(checkpoint).is_dir():
        raw = read_checkpoint(checkpoint, trust=trust)  # a whole pickled model (trusted): find_state_dict takes its state_dict()
        return raw, spec if isinstance(spec, Spec) else discover_spec(checkpoint, raw.content, spec)
    from .checkpoint.hf import is_hf_folder, model_section, read_config, read_hf_folder

    if is_hf_folder(checkpoint):
        raw = read_hf_folder(checkpoint, trust=trust)
        if isinstance(spec, Spec):
            return raw, spec
        model = model_section(read_config(checkpoint), checkpoint)
        return raw, discover_spec(checkpoint, None, spec, defaults={"model": model},
                                  defaults_origin=str(Path(checkpoint) / "config.json"))
    # An alberta-framework checkpoint folder (orbax): read without JAX (fadiag.checkpoint.alberta).
    from .checkpoint.alberta import is_alberta_folder, missing_config_error, read_folder

    if not is_alberta_folder(checkpoint):
        raise CheckpointError("a folder, but neither a Hugging Face model folder (no config.json) nor an "
                              "alberta-framework checkpoint (no state/_METADATA)", source=str(checkpoint))
    raw = read_folder(checkpoint)
    try:
        return raw, spec if isinstance(spec, Spec) else discover_spec(checkpoint, raw.content, spec)
    except SpecError:
        if spec is None and "fadiag_spec" not in raw.content:
            raise missing_config_error(checkpoint) from None
        raise


def _build_loaded(raw: RawCheckpoint, sp: Spec, checkpoint: str, device: str) -> tuple:
    """(model with the checkpoint's weights in float32 eval mode on ``device``, state dict, extras)."""
    from .compat.biotorch import bp_twin_module, needs_bp_twin
    from .models import resolve_arch
    from .models.construct import build_for_spec

    builder = resolve_arch(sp.model.arch, origin=sp.origin, base_dir=sp.base_dir)
    if getattr(builder, "hf_class", None) is not None and not (sp.model.args_from or sp.model.config_class):
        return (*_load_transformers(builder, raw, sp, checkpoint, device), None)  # transformers' own loader
    model, args_note = build_for_spec(sp, raw.content)
    twin = []
    if needs_bp_twin(model):  # learning-rule layers or backward hooks (BioTorch FA/DFA): the twin's autograd is BP
        model, twin = bp_twin_module(model)
    sd, used = find_state_dict(raw.content, sp.checkpoint.state_dict, sp.checkpoint.strip_prefix, source=checkpoint,
                               model_keys=model.state_dict().keys())
    extras = {k: v for k, v in raw.content.items() if k != used} if isinstance(raw.content, dict) and used else {}
    sd, extras = _fit_state(model, sd, extras, raw, checkpoint)
    if twin:
        extras = {**extras, "bp_twin": twin}
    check_state_dict(model, sd, source=checkpoint, spec_origin=sp.origin)
    model.load_state_dict(sd, strict=True)
    model = model.float()  # small-magnitude metrics are never computed in fp16 (docs/science.md §2, pitfall 3)
    _share_weights(model, sd)
    try:
        model.to(device)
    except Exception as e:
        raise CheckpointError(f"cannot move the model to device {device!r} ({e})", source=checkpoint) from None
    model.eval()
    return model, sd, extras, args_note


def _load_transformers(builder, raw: RawCheckpoint, sp: Spec, checkpoint: str, device: str) -> tuple:
    """A Hugging Face class loaded by transformers itself (fadiag.checkpoint.hf.load_transformers) from the
    state dict fadiag read safely. A folder's keys go as ``save_pretrained`` wrote them; another checkpoint's
    wrapper prefix is stripped as for any model (``checkpoint.strip_prefix``). The state dict kept is the
    model's own (module names, after transformers' renames) in the checkpoint's dtypes; the model is float32."""
    import contextlib
    import sys

    import torch

    from .checkpoint.hf import load_transformers
    from .models import check_size

    check_size(sp.model.arch, builder, sp.model.args, origin=sp.origin)
    keys = None
    if not raw.format.startswith("hf-") and sp.checkpoint.strip_prefix == "auto":
        with contextlib.suppress(Exception), torch.device("meta"):
            keys = builder(**sp.model.args).state_dict().keys()
    strip = "" if raw.format.startswith("hf-") else sp.checkpoint.strip_prefix
    sd, used = find_state_dict(raw.content, sp.checkpoint.state_dict, strip, source=checkpoint, model_keys=keys)
    extras = {k: v for k, v in raw.content.items() if k != used} if isinstance(raw.content, dict) and used else {}
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = load_transformers(builder.hf_class, sp.model.args, sd, source=checkpoint)
    except (CheckpointError, SpecError):
        raise
    except Exception as e:  # transformers' own refusal (a shape it cannot load, a config it rejects)
        msg = " ".join(str(e).split())[:200]
        raise SpecError(f"transformers cannot load {builder.hf_class.__name__} ({type(e).__name__}: {msg})",
                        source=checkpoint) from None
    from .stream.seq2seq import attach

    attach(model)  # encoder-decoder: the decoder is fed (start, x) and scored as a causal LM
    own = {k: v.detach() for k, v in model.state_dict().items()}
    try:  # float32: small-magnitude metrics are never computed in fp16
        model.float().to(device)
    except Exception as e:
        raise CheckpointError(f"cannot move the model to device {device!r} ({e})", source=checkpoint) from None
    return model.eval(), own, extras


def _share_weights(model, sd: dict) -> None:
    """Hold the weights once: each parameter or buffer that load_state_dict copied from a checkpoint tensor of the
    same dtype, shape and device now uses that tensor's memory (its own copy is freed). The values are the same,
    and nothing fadiag runs writes to a model's weights."""
    import torch

    own = model.state_dict(keep_vars=True)
    for k, t in sd.items():
        p = own.get(k)
        if (isinstance(p, torch.Tensor) and isinstance(t, torch.Tensor) and p is not t and p.dtype == t.dtype
                and p.shape == t.shape and p.device == t.device and p.layout == t.layout == torch.strided):
            p.data = t


def _fit_state(model, sd: dict, extras: dict, raw: RawCheckpoint, checkpoint: str) -> tuple:
    """The layout fixes a model needs before its state dict is checked: multihead learner extras split off,
    tied weights a Hugging Face folder leaves out filled in, shapes of checkpoint-built models taken."""
    import torch

    from .models.multihead import MultiHeadLearner, split_state

    if isinstance(model, MultiHeadLearner):
        # A flat multihead state may carry learner extras (step sizes, traces): they are not module state.
        sd, learner = split_state(sd)
        if "norm_mean" in sd and "norm_count" not in sd:
            # Exports from other frameworks often omit the count; auditing never needs it.
            sd["norm_count"] = torch.zeros((), dtype=torch.int64)
        if learner:
            extras = {**extras, "learner": {**extras.get("learner", {}), **learner}}
    if raw.format.startswith("hf-"):
        from .checkpoint.hf import drop_nonpersistent, fill_tied

        fill_tied(model, sd)
        drop_nonpersistent(model, sd)
    from .compat.biotorch import bp_twin_state_dict, detect_learning_rule

    rule = detect_learning_rule(sd, source=checkpoint)
    if rule.detected:  # *.weight_backward feedback (docs/upstream.md): the BP twin gets the forward weights
        sd, feedback = bp_twin_state_dict(sd, source=checkpoint)
        extras = {**extras, "learning_rule": rule, "learning_rule_feedback": feedback}
    if hasattr(model, "build_from_state_dict"):
        # Models whose structure lives in the checkpoint (gsnn-upstream) take their shapes from it.
        try:
            model.build_from_state_dict(sd)
        except ValueError as e:
            raise SpecError(str(e), source=checkpoint) from None
    return sd, extras


def _lm_labels(sp: Spec, model) -> bool:
    """(B, T) token labels: loss: lm, or a causal language model with no loss named."""
    from .models.presets import _is_lm_class

    return sp.loss == "lm" or (sp.loss is None and _is_lm_class(model))


def _check_decoder_targets(model, bl: list, source: str) -> None:
    """An encoder-decoder is fed x as its decoder's input (fadiag.stream.seq2seq): labels other than x would be
    scored against a decoder that never saw them."""
    import torch

    from .stream.mask import plain
    from .stream.seq2seq import is_encoder_decoder

    if is_encoder_decoder(model) and not all(torch.equal(plain(x).to(y.device), y) for x, y in bl):
        raise DataError(f"{type(model).__name__} is an encoder-decoder: fadiag feeds its decoder the ids x (after the "
                        "start token) and scores next-token predictions, so the labels y must equal x",
                        source=source)


_takes_tokens = takes_tokens  # the old private name (fadiag.data.takes_tokens)


def _trial_forward(model, x, source: str) -> int:
    """Two rows through the model first: data the model cannot take is bad input (exit 2), not a crash. Token
    ids with an attention mask go in with ``attention_mask=`` (a model that takes none: exit 2). Returns the
    multiply-adds of its weight layers on these rows (:func:`_count_macs`)."""
    import contextlib
    import sys

    import torch

    from .stream.mask import model_inputs

    args, kw = model_inputs(model, x)
    macs = [0]
    handles = _count_macs(model, macs)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            model(*args, **kw)
    except Exception as e:
        msg = " ".join(str(e).split())[:160]
        raise DataError(f"the model cannot take rows of shape {tuple(x.shape[1:])} ({type(e).__name__}: {msg})",
                        source=source) from None
    finally:
        for h in handles:
            h.remove()
    return macs[0]


def _count_macs(model, acc: list) -> list:
    """Forward hooks adding to acc[0] each weight layer's multiply-adds: weight entries x output positions (a
    Linear's rows, a convolution's pixels). Embedding tables (lookups) and attention's own products are left
    out: a lower bound, from shapes only, so the same on every run."""
    import torch

    def hook(m, _a, out):
        w = getattr(m, "weight", None)
        if isinstance(out, torch.Tensor) and out.dim() >= 1 and isinstance(w, torch.Tensor) and w.dim() >= 2:
            ch = out.shape[1] if isinstance(m, torch.nn.modules.conv._ConvNd) and out.dim() > 1 else out.shape[-1]
            acc[0] += int(w.numel()) * (out.numel() // max(1, int(ch)))

    skip = (torch.nn.Embedding, torch.nn.EmbeddingBag)
    return [m.register_forward_hook(hook) for m in model.modules()
            if not isinstance(m, skip) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def load_batches(sp: Spec, model=None, *, data=None, batches=None, batch_size=None, seed=None, shuffle=None,
                 labels: str = "class"):
    from .data import load_arrays, make_batches, synthetic

    d = sp.data
    nb = d.batches if batches is None else batches
    from .spec import DEFAULT_BATCH_SIZE

    bs = d.batch_size if batch_size is None else batch_size
    fitted = None
    if bs is None:
        bs = DEFAULT_BATCH_SIZE
        if data is None and d.source == "digits" and nb * bs > DIGITS_TEST_ROWS:  # fit fadiag's own split
            bs = max(1, DIGITS_TEST_ROWS // nb)
            fitted = (f"batch size {bs}: the default {DEFAULT_BATCH_SIZE} x {nb} batches does not fit the digits test "
                      f"split ({DIGITS_TEST_ROWS} rows); (c)'s ceiling is calibrated at batch size {DEFAULT_BATCH_SIZE}")
    sd_seed = d.seed if seed is None else seed
    shuf = d.shuffle if shuffle is None else shuffle
    if nb < 1 or bs < 1:
        raise DataError("batches and batch size must be positive", source="--batches/--batch-size")
    if nb * bs > 10_000_000:
        raise DataError("batches x batch size over the 10,000,000-row limit", source="--batches/--batch-size")
    if data is not None:
        path, source = data, None
    elif d.source in ("synthetic", "digits"):
        path, source = None, d.source
    else:
        if not d.path:
            if sp.origin.endswith("config.json"):  # a Hugging Face folder with no spec: the model only
                raise DataError("no eval data: a model folder holds no data; pass --data (an .npz or .pt with x, "
                                "y) or --spec with a data: section", source=sp.origin)
            raise DataError(f"no eval data: set data.path in the spec (data.source is {d.source}) or pass --data",
                            source=sp.origin)
        path, source = sp.resolve(d.path), d.source
    if source == "synthetic":
        args = sp.model.args
        in_shape = (args.get("in_dim") or args.get("n_features") or 16,)
        x, y = synthetic(in_shape, int(args.get("n_classes", 10)), d.n_samples or nb * bs, sd_seed)
        src_name = "synthetic"
    elif source == "digits":
        from .data import digits

        x, y = digits("test")  # held out: never the rows a digits model trained on (docs/science.md §5)
        src_name = "sklearn digits"
    else:
        x, y = load_arrays(path, source, integer_labels=labels, keep_int=model is not None and _takes_tokens(model))
        src_name = path
    n_classes = _n_classes(model)
    if labels == "class" and n_classes is not None and y.numel() and y.max().item() >= n_classes:
        raise DataError(f"label {y.max().item()} out of range for a model with {n_classes} classes",
                        source=src_name)
    bl = make_batches(x, y, bs, nb, shuf, sd_seed, source=src_name)
    info = {"source": src_name, "batches": nb, "batch_size": bs, "seed": sd_seed, "shuffle": shuf}
    if getattr(x, "attention_mask", None) is not None:  # fadiag.stream.mask: the model gets attention_mask=
        info["attention_mask"] = True
    if fitted:
        info["batch_size_note"] = fitted
    if source == "digits":
        info["split"] = "test (360 of 1797 rows: sklearn train_test_split test_size=0.2, random_state=0, stratified)"
    return bl, info


#: Rows of fadiag's digits test split (fadiag.data.DIGITS_SPLIT: 20% of 1 797, stratified).
DIGITS_TEST_ROWS = 360


def _n_classes(model):
    if model is None:
        return None
    for name in ("out_head", "head"):
        m = getattr(model, name, None)
        if m is not None and hasattr(m, "out_features"):
            return int(m.out_features)
    return None


def check_state_dict(model, sd: dict, *, source: str, spec_origin: str) -> None:
    """The spec must describe the checkpoint exactly: name missing/unexpected keys and shape mismatches."""
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [f"{k} {tuple(sd[k].shape)} vs spec {tuple(want[k].shape)}" for k in want
              if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_few(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_few(shapes)}")
    if problems:
        raise SpecError(f"checkpoint does not match the spec's model ({spec_origin}): " + "; ".join(problems),
                        source=source)


def _few(items, n: int = 3) -> str:
    s = ", ".join(items[:n])
    return s + (f", ... (+{len(items) - n})" if len(items) > n else "")
