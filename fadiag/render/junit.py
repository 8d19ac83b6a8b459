"""``--format junit``: JUnit XML for CI test reporters (GitLab, Jenkins, GitHub test-report actions).

One ``<testsuites>``; one ``<testsuite>`` per report, named "fadiag.<family> <checkpoint path>"; one
``<testcase>`` per flag (classname "fadiag.<family>.<method>", name "(a) residual stream exploded"):
a flagged diagnostic is a ``<failure type="flag">`` whose text is the flag's detail, a skipped one
(flagged null) is ``<skipped message=detail/>``, a passing one carries its value in ``<system-out>``.
Families with per-layer data add one informational testcase per layer (classname "....layers"), which
passes with its values in ``<system-out>``; for audit a layer the report names non-finite
(``AuditReport.nonfinite_h_layers`` / ``nonfinite_g_layers``) fails it, because a non-finite number never
passes (DESIGN.md). Other families' nulls mean "not applicable" (N/A) and stay informational.

Built with xml.etree.ElementTree so every attribute and text is escaped; characters XML 1.0 forbids
are replaced by U+FFFD. Counts (tests, failures, skipped, errors) are those of the testcases written.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .markdown import MISSING, num

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text(v) -> str:
    s = v if isinstance(v, str) else num(v)
    return _INVALID_XML.sub("\ufffd", s)


def _values(f) -> str:
    return f"value = {num(f.value)}, threshold = {num(f.threshold)}"


class Suite:
    """One report's <testsuite>, counting what it holds."""

    def __init__(self, parent: ET.Element, name: str):
        self.el = ET.SubElement(parent, "testsuite", name=text(name))
        self.props = ET.SubElement(self.el, "properties")
        self.tests = self.failures = self.skipped = 0

    def prop(self, name: str, value) -> None:
        if value is not None:
            ET.SubElement(self.props, "property", name=name, value=text(value))

    def case(self, classname: str, name: str, *, failure: tuple | None = None, skipped: str | None = None,
             out: str | None = None) -> None:
        tc = ET.SubElement(self.el, "testcase", classname=text(classname), name=text(name), time="0")
        self.tests += 1
        if failure is not None:
            msg, kind, body = failure
            fe = ET.SubElement(tc, "failure", message=text(msg), type=kind)
            fe.text = text(body)
            self.failures += 1
        elif skipped is not None:
            ET.SubElement(tc, "skipped", message=text(skipped))
            self.skipped += 1
        if out:
            ET.SubElement(tc, "system-out").text = text(out)

    def close(self) -> None:
        if not len(self.props):
            self.el.remove(self.props)
        for k, v in (("tests", self.tests), ("failures", self.failures), ("errors", 0),
                     ("skipped", self.skipped), ("time", "0")):
            self.el.set(k, str(v))


def audit_layers(s: Suite, r, cls: str) -> None:
    h, g = r.residual_norms or [], r.bp_grad_norms or []
    bad_h, bad_g = set(r.nonfinite_h_layers), set(r.nonfinite_g_layers)
    for i in range(r.n_layers):
        out = f"‖h_{i}‖ = {num(h[i] if i < len(h) else None)}, ‖g_{i}‖ = {num(g[i] if i < len(g) else None)}"
        bad = [n for n, layers in (("‖h_l‖", bad_h), ("‖g_l‖", bad_g)) if i in layers]
        fail = (f"non-finite {' and '.join(bad)} at layer {i}", "non-finite", out) if bad else None
        s.case(cls, f"layer {i}", failure=fail, out=out)


def _generic_layers(s: Suite, layers: list, cls: str) -> None:
    for i, row in enumerate(layers):
        if not isinstance(row, dict):
            continue
        fields = ", ".join(f"{k} = {num(v)}" for k, v in row.items()
                           if k != "layer" and (v is None or isinstance(v, (bool, int, float, str))))
        s.case(cls, f"layer {row.get('layer', i)}", out=fields or MISSING)


def _flag_case(s: Suite, cls: str, f) -> None:
    name = f"({f.id}) {f.name or ''}".strip()
    detail = f.detail or ""
    if f.flagged is None:
        s.case(cls, name, skipped=detail or "skipped", out=_values(f))
    elif f.flagged:
        s.case(cls, name, failure=(f"{detail} ({_values(f)})" if detail else _values(f), "flag", detail),
               out=_values(f))
    else:
        s.case(cls, name, out=f"{_values(f)}: {detail}" if detail else _values(f))


def _suite(root: ET.Element, r) -> Suite:
    ck = r.checkpoint if isinstance(r.checkpoint, dict) else {}
    path = ck.get("path")
    method_name = getattr(r, "method_name", None)
    s = Suite(root, f"fadiag.{r.family} {path}" if path else f"fadiag.{r.family}")
    for k, v in (("schema", r.schema), ("verdict", r.verdict), ("method_name", method_name),
                 ("fadiag_version", r.fadiag_version or None)):
        s.prop(k, v)
    for k in ("path", "sha256", "format", "trusted"):
        s.prop(f"checkpoint.{k}", ck.get(k))
    method = method_name or (path.rsplit("/", 1)[-1] if path else "")
    cls = f"fadiag.{r.family}" + (f".{method}" if method else "")
    for f in r.flags:
        _flag_case(s, cls, f)
    from ..registry import form

    layers = form(r.family, "junit")  # a family's own per-layer cases (audit's: audit_layers)
    if layers is not None:
        layers(s, r, cls + ".layers")
    elif isinstance(getattr(r, "layers", None), list):
        _generic_layers(s, r.layers, cls + ".layers")
    s.close()
    return s


def render(reports: list, **_) -> str:
    root = ET.Element("testsuites", name="fadiag")
    suites = [_suite(root, r) for r in reports]
    for k in ("tests", "failures", "skipped"):
        root.set(k, str(sum(getattr(s, k) for s in suites)))
    root.set("errors", "0")
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
