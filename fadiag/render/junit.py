"""``--format junit``: JUnit XML for CI test reporters (GitLab, Jenkins, GitHub test-report actions).

One ``<testsuites>``; one ``<testsuite>`` per report, named "fadiag.<family> <checkpoint path>"; one
``<testcase>`` per flag (classname "fadiag.<family>.<method>", name "(a) residual stream exploded"):
a flagged diagnostic is a ``<failure type="flag">`` whose text is the flag's detail, a skipped one
(flagged null) is ``<skipped message=detail/>``, a passing one carries its value in ``<system-out>``.
Families with per-layer data add one informational testcase per layer (classname "....layers"), which
passes with its values in ``<system-out>``; for audit a null (non-finite) ‖h_l‖ or ‖g_l‖ fails it,
because a non-finite number never passes (DESIGN.md). Other families' nulls mean "not applicable" (N/A)
and stay informational.

Built with xml.etree.ElementTree so every attribute and text is escaped; characters XML 1.0 forbids
are replaced by U+FFFD. Counts (tests, failures, skipped, errors) are those of the testcases written.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from .markdown import MISSING, family, num

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text(v) -> str:
    s = v if isinstance(v, str) else num(v)
    return _INVALID_XML.sub("\ufffd", s)


def _null(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _values(f: dict) -> str:
    return f"value = {num(f.get('value'))}, threshold = {num(f.get('threshold'))}"


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


def _audit_layers(s: Suite, r: dict, cls: str) -> None:
    h = r.get("residual_norms") or []
    g = r.get("bp_grad_norms") or []
    for i in range(max(len(h), len(g))):
        hv = h[i] if i < len(h) else None
        gv = g[i] if i < len(g) else None
        out = f"‖h_{i}‖ = {num(hv)}, ‖g_{i}‖ = {num(gv)}"
        bad = [n for n, v in (("‖h_l‖", hv), ("‖g_l‖", gv)) if _null(v)]
        fail = (f"non-finite {' and '.join(bad)} at layer {i}", "non-finite", out) if bad else None
        s.case(cls, f"layer {i}", failure=fail, out=out)


def _generic_layers(s: Suite, r: dict, cls: str) -> None:
    for i, row in enumerate(r.get("layers") or []):
        if not isinstance(row, dict):
            continue
        fields = ", ".join(f"{k} = {num(v)}" for k, v in row.items()
                           if k != "layer" and (v is None or isinstance(v, (bool, int, float, str))))
        s.case(cls, f"layer {row.get('layer', i)}", out=fields or MISSING)


def _suite(root: ET.Element, r: dict) -> Suite:
    fam = family(r)
    ck = r.get("checkpoint") or {}
    path = ck.get("path")
    s = Suite(root, f"fadiag.{fam} {path}" if path else f"fadiag.{fam}")
    for k in ("schema", "verdict", "method_name", "fadiag_version"):
        s.prop(k, r.get(k))
    for k in ("path", "sha256", "format", "trusted"):
        s.prop(f"checkpoint.{k}", ck.get(k))
    method = r.get("method_name") or (path.rsplit("/", 1)[-1] if path else "")
    cls = f"fadiag.{fam}" + (f".{method}" if method else "")
    for f in r.get("flags") or []:
        name = f"({f.get('id', '?')}) {f.get('name') or ''}".strip()
        detail = f.get("detail") or ""
        if f.get("flagged") is None:
            s.case(cls, name, skipped=detail or "skipped", out=_values(f))
        elif f.get("flagged"):
            s.case(cls, name, failure=(f"{detail} ({_values(f)})" if detail else _values(f), "flag", detail),
                   out=_values(f))
        else:
            s.case(cls, name, out=f"{_values(f)}: {detail}" if detail else _values(f))
    if fam == "audit":
        _audit_layers(s, r, cls + ".layers")
    elif isinstance(r.get("layers"), list):
        _generic_layers(s, r, cls + ".layers")
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
