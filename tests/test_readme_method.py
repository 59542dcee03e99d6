"""The README's "a method of your own" example runs as printed, in at most 30 lines: a user's
method is declared, registered and fitted by the same runner as the kit's (its parent, the
source-only model, fitted first), then loaded from the cache."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (code,) = [b for b in blocks if "methods.register(" in b and "class " in b]
    return code


def test_the_readme_method_example_runs_and_is_short(tmp_path, monkeypatch):
    from kit import methods

    code = _example()
    assert len(code.strip().splitlines()) <= 30
    monkeypatch.setenv("KIT_CACHE", str(tmp_path))
    monkeypatch.setenv("KIT_HEADLESS", "1")
    ns: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), ns)
        fitted = ns["fitted"]
        assert not fitted.cached and fitted.key.startswith("target_finetune-") and fitted.history["train"]
        again = ns["fit"]("target_finetune", ns["resolve"]("smoke", iters=2), seed=0)
        assert again.cached and again.key == fitted.key
        assert any(p.name.startswith("source_only-") for p in tmp_path.glob("*.pt"))   # its parent, cached too
    finally:
        methods._REGISTRY.pop("target_finetune", None)
