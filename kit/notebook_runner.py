"""Finding, inspecting and running the kit's notebooks headless: what ``kit run`` and
``kit run-all`` do (:mod:`kit.cli` parses the command line and calls these).

:func:`find_notebook` resolves a path, stem or two-digit prefix in ``notebooks/``;
:func:`notebook_parameters` reads what a notebook's ``parameters`` cell declares (papermill's
inspection); :func:`run_notebook` checks the given parameters against it (an unknown one is a
:class:`CliError` before any kernel starts) and executes the notebook with papermill into
``runs/<profile>/<stem>.ipynb``, with ``KIT_HEADLESS=1``, returning 0 on success and 1 when a
cell failed (including error outputs that the kernel reported as ok). A run that fails once
its kernel is started marks the notebook's previous ``runs/<profile>/<stem>/metrics.json`` as
failed (:func:`kit.results.mark_failed`), so that its results no longer pass for current ones.
Split out of ``kit/cli.py``, which still exports these names.
"""
from __future__ import annotations

import ast
import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from .cache import runs_root
from .results import run_folder

__all__ = ["CliError", "DEFAULT_PROFILE", "notebooks_dir", "list_notebooks", "find_notebook", "notebook_parameters",
           "run_notebook"]

DEFAULT_PROFILE = "quick"


class CliError(Exception):
    """A usage error reported as ``kit: error: ...`` with exit code ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def notebooks_dir() -> Path:
    """``./notebooks`` (the kit's commands are run from the project root)."""
    return Path("notebooks")


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The kit's notebooks, ``NN_*.ipynb``, in order."""
    folder = folder or notebooks_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def find_notebook(spec: str, folder: Path | None = None) -> Path:
    """A notebook from a path, a stem (``00_introduction``) or a prefix (``00``) in ``notebooks/``."""
    folder = folder or notebooks_dir()
    path = Path(spec)
    if path.suffix == ".ipynb" or path.exists():
        if not path.is_file():
            raise CliError(f"notebook {spec} does not exist")
        return path
    candidates = [folder / f"{spec}.ipynb"]
    if candidates[0].is_file():
        return candidates[0]
    matches = sorted(folder.glob(f"{spec}_*.ipynb")) or sorted(p for p in folder.glob("*.ipynb") if spec in p.stem)
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(p.stem for p in list_notebooks(folder)) or f"none in {folder}/"
    if len(matches) > 1:
        raise CliError(f"{spec!r} matches several notebooks: {', '.join(p.stem for p in matches)}")
    raise CliError(f"no notebook {spec!r} (looked for a path and in {folder}/); notebooks: {known}")


def notebook_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters declared in the notebook's ``parameters`` cell (papermill's inspection),
    each with ``name``, ``default`` (source text), ``type`` and ``help``."""
    import nbformat
    import papermill

    nb = nbformat.read(str(path), as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        return {}
    out = {}
    for name, p in papermill.inspect_notebook(str(path)).items():
        typ = p.get("inferred_type_name") or "None"
        if typ == "None":
            try:
                typ = type(ast.literal_eval(p.get("default", ""))).__name__
            except (ValueError, SyntaxError):
                typ = "?"
        out[name] = {"name": name, "default": p.get("default"), "type": typ, "help": p.get("help") or ""}
    return out


def _match_params(params: Mapping[str, Any], declared: Mapping[str, Any], notebook: str) -> dict[str, Any]:
    """Map given names onto declared ones (exact, else case-insensitive); reject unknown names."""
    lower: dict[str, list[str]] = {}
    for name in declared:
        lower.setdefault(name.lower(), []).append(name)
    out, unknown = {}, []
    for key, value in params.items():
        if key in declared:
            out[key] = value
        elif len(lower.get(key.lower(), [])) == 1:
            out[lower[key.lower()][0]] = value
        else:
            unknown.append(key)
    if unknown:
        valid = ", ".join(declared) or "(none: the notebook has no cell tagged 'parameters')"
        raise CliError(f"{notebook} does not declare parameter(s) {', '.join(unknown)}; declared: {valid}")
    return out


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by the kernel) and restore them afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(source: str | None) -> str:
    lines = [ln for ln in (source or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[0][:100] + (" ..." if len(lines) > 1 or len(lines[0]) > 100 else "")


def _error_outputs(path: Path) -> list[tuple[int, Any, dict]]:
    """Cells of an executed notebook with an error output (that the kernel reported as ok,
    e.g. ``sys.exit(0)``, which IPython swallows); cells tagged raises-exception excepted."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable output notebook is reported elsewhere
        return []
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((i, cell, out))
                break
    return found


def _mark_failed(metrics: Path, error: str, runtime_s: float, stream) -> None:
    """Mark the notebook's previous record failed (if it has one) and say so."""
    from .results import mark_failed

    if mark_failed(metrics, error, runtime_s) is not None:
        print(f"[kit] marked {metrics} as failed: its earlier results are no longer shown as current "
              f"(the record is kept in it under 'previous')", file=stream, flush=True)


def run_notebook(notebook: str | Path, profile: str | None = None, params: Mapping[str, Any] | None = None,
                 out_dir: str | Path | None = None, cell_timeout: float | None = None, kernel: str = "python3",
                 log_output: bool = False, stream=None) -> int:
    """Execute one notebook with papermill; returns 0 on success, 1 if a cell failed.

    Raises :class:`CliError` (before starting a kernel) for an unknown notebook or
    parameter. ``profile`` None = ``params["PROFILE"]`` if given, else "quick".

    When the run fails (a cell raised, e.g. on a parameter value the notebook's config
    rejects, a timeout, a dead kernel, an interrupt), the notebook's previous record
    ``runs/<profile>/<stem>/metrics.json`` (``<RUN_DIR>/metrics.json`` with ``-p RUN_DIR``) is
    marked failed with the error (:func:`kit.results.mark_failed`). A command rejected before
    the kernel starts leaves it alone: nothing was run.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    stream = stream or sys.stdout
    path = notebook if isinstance(notebook, Path) else find_notebook(str(notebook))
    declared = notebook_parameters(path)
    params = _match_params(dict(params or {}), declared, path.name)
    given = params.get("PROFILE")
    if profile is not None and given is not None and given != profile:
        raise CliError(f"--profile {profile} contradicts -p PROFILE {given}")
    profile = profile or given or DEFAULT_PROFILE
    if "PROFILE" in declared:
        params["PROFILE"] = profile
    else:
        print(f"[kit] note: {path.name} declares no PROFILE parameter; it runs with its own settings", file=stream)
    out_dir = Path(out_dir) if out_dir is not None else runs_root() / str(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.stem}.ipynb"
    metrics = run_folder(path.stem, str(profile), params.get("RUN_DIR")) / "metrics.json"   # where its Run writes
    shown = " ".join(f"{k}={v!r}" for k, v in params.items())
    print(f"[kit] running {path} -> {out}  {shown}", file=stream, flush=True)
    t0 = time.perf_counter()
    failed = None
    try:
        with _env(KIT_HEADLESS="1"):
            papermill.execute_notebook(
                str(path), str(out), parameters=params, kernel_name=kernel, progress_bar=sys.stderr.isatty(),
                log_output=log_output, execution_timeout=cell_timeout)
    except KeyboardInterrupt:
        _mark_failed(metrics, f"kit run {path.stem} was interrupted", time.perf_counter() - t0, stream)
        raise
    except PapermillExecutionError as e:
        source = e.args[2] if len(e.args) > 2 else None
        failed = (f"cell {e.cell_index} (execution count {e.exec_count}) `{_first_line(source)}` raised "
                  f"{e.ename}: {_ANSI.sub('', str(e.evalue))}")
    except Exception as e:  # noqa: BLE001 - timeouts, dead kernels, missing kernels: report, exit 1
        msg = _ANSI.sub("", str(e)).strip().replace("\n", "\n    ")
        failed = f"{type(e).__name__}: {msg}"
    if failed is None:
        errors = _error_outputs(out)
        if errors:
            i, cell, err = errors[0]
            failed = (f"cell {i} (execution count {cell.get('execution_count')}) `{_first_line(cell.source)}` "
                      f"raised {err.get('ename')}: {_ANSI.sub('', str(err.get('evalue')))}")
    dt = time.perf_counter() - t0
    if failed is not None:
        print(f"[kit] FAILED {path.stem} after {dt:.1f} s: {failed}\n[kit] executed notebook with the error: {out}",
              file=stream, flush=True)
        _mark_failed(metrics, f"kit run {path.stem} failed: {failed}", dt, stream)
        return 1
    print(f"[kit] ok {path.stem} in {dt:.1f} s -> {out}", file=stream, flush=True)
    return 0
