"""The equations index (kit.equations): docs/equations.md is generated from the docstring
tags and current, every loss is tagged, and no tag is malformed."""
import ast
import re
from pathlib import Path

from kit import equations

ROOT = Path(__file__).resolve().parents[1]


def test_the_page_is_current():
    page = (ROOT / "docs" / "equations.md").read_text()
    assert page == equations.markdown(), "docs/equations.md is stale: run `python -m kit.equations`"


def test_every_paper_has_tagged_equations():
    papers = {e.paper for e in equations.collect()}
    assert papers == set(equations.PAPERS)


def test_every_loss_function_is_tagged():
    """Each function named *_loss in kit/losses/ (and CDCL's label-remapping loss) names the
    equation it implements."""
    untagged = []
    files = sorted((ROOT / "kit" / "losses").glob("*.py")) + sorted((ROOT / "kit" / "methods").glob("cdcl*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_loss") and not node.name.startswith("_"):
                if not equations.parse_tags(ast.get_docstring(node) or ""):
                    untagged.append(f"{path.name}:{node.name}")
    assert not untagged, f"losses without an equation tag: {untagged}"


def test_no_malformed_tag():
    """Anything that looks like a paper tag, e.g. "[RIPU Eq 2]" or "[DAS3 stage 1]", must parse."""
    near = re.compile(r"\[(" + "|".join(equations.PAPERS) + r")\b[^\]]*\]")
    bad = []
    for path in sorted((ROOT / "kit").rglob("*.py")):
        if path.name == "equations.py":
            continue
        for m in near.finditer(path.read_text()):
            if not equations.TAG.fullmatch(m[0]):
                bad.append(f"{path.relative_to(ROOT)}: {m[0]}")
    assert not bad, f"malformed equation tags: {bad}"


def test_parse_and_sort():
    eqs = equations.parse_tags("[RIPU: L_nl] x [RIPU Eq. 3] [AdaptSegNet Eq. 12] [Foo Eq. 1]")
    assert [(e.paper, e.number, e.name) for e in eqs] == [("RIPU", None, "L_nl"), ("RIPU", 3, None),
                                                          ("AdaptSegNet", 12, None)]
    page = equations.markdown([equations.Equation("RIPU", 3, None, "kit.a", "x | y")])
    assert "| Eq. 3 | `kit.a` | x \\| y |" in page and "(no tagged equation)" in page
