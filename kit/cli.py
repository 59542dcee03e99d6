"""``kit``: run the notebooks headless, summarise their results, train outside notebooks.

::

    kit run 00_introduction --profile paper -p DATA_ROOT /data -p SEEDS "[0,1,2]"
    kit run 01 --profile smoke --cell-timeout 600      # a stem or its two-digit prefix
    kit run-all --profile quick                         # every notebooks/NN_*.ipynb, then the summary
    kit summary --profile quick                         # runs/quick/*/metrics.json as a table
    kit results-page --profile full                     # docs/results-full.md from runs/full/*/metrics.json
    kit params 01_adaptsegnet                           # the parameters a notebook declares
    kit train supervised --profile smoke -p ITERS=20    # one process ...
    torchrun --nproc_per_node=4 -m kit train supervised --profile paper   # ... or N GPUs

``kit run`` executes a notebook with papermill into ``runs/<profile>/<stem>.ipynb`` with
``PROFILE=<profile>`` and the ``-p`` parameters. Unlike papermill, which only warns, it
rejects a parameter the notebook's ``parameters`` cell does not declare (exit code 2),
before starting a kernel. Values are read as papermill's ``-p`` reads them (``True``,
``False``, ``None``, ints, floats, else strings) and JSON lists/objects (``[0,1,2]``).
The kernel gets ``KIT_HEADLESS=1`` (widgets render their static figure). Relative paths
(``runs/``, the cache) are relative to the directory ``kit`` is started in, which is
also the kernel's working directory.

Exit codes: 0 success; 1 a notebook or training failed, or nothing to summarise;
2 a usage error (unknown notebook, parameter, method or profile).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .cache import runs_root

__all__ = ["main", "parse_value", "parse_params", "find_notebook", "notebook_parameters", "run_notebook",
           "summary_rows", "CliError"]

DEFAULT_PROFILE = "quick"


class CliError(Exception):
    """A usage error reported as ``kit: error: ...`` with exit code ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill's CLI reads it, plus JSON lists and objects.

    >>> [parse_value(v) for v in ["True", "None", "3", "2.5e-4", "[0, 1]", "paper"]]
    [True, None, 3, 0.00025, [0, 1], 'paper']
    """
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            try:  # Python literals: [0, 1, None], (64, 128), {'a': True}
                return ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                raise CliError(f"cannot read {text!r} as a list or object (write JSON, e.g. [0,1,2])") from None
    return text


def parse_params(groups: Sequence[Sequence[str]] | None) -> tuple[dict[str, Any], list[str]]:
    """``-p`` groups (``KEY VALUE`` or ``KEY=VALUE``) -> ``(params, leftover tokens)``.

    Tokens are read left to right: ``KEY=VALUE`` is one parameter, any other token is a
    key whose value is the next token. A last key without a value is returned as a
    leftover (``kit run -p X=1 00`` puts the notebook after ``-p``).
    """
    params: dict[str, Any] = {}
    leftovers: list[str] = []
    for group in groups or []:
        tokens = list(group)
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if "=" in tok and not tok.startswith("="):
                key, _, value = tok.partition("=")
                i += 1
            elif i + 1 < len(tokens):
                key, value = tok, tokens[i + 1]
                i += 2
            else:
                leftovers.append(tok)
                i += 1
                continue
            if not key.isidentifier():
                raise CliError(f"-p {tok!r}: {key!r} is not a parameter name; use -p KEY VALUE or -p KEY=VALUE")
            params[key] = parse_value(value)
    return params, leftovers


# ----------------------------------------------------------------------------------
# Notebooks
# ----------------------------------------------------------------------------------
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


def run_notebook(notebook: str | Path, profile: str | None = None, params: Mapping[str, Any] | None = None,
                 out_dir: str | Path | None = None, cell_timeout: float | None = None, kernel: str = "python3",
                 log_output: bool = False, stream=None) -> int:
    """Execute one notebook with papermill; returns 0 on success, 1 if a cell failed.

    Raises :class:`CliError` (before starting a kernel) for an unknown notebook or
    parameter. ``profile`` None = ``params["PROFILE"]`` if given, else "quick".
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
    shown = " ".join(f"{k}={v!r}" for k, v in params.items())
    print(f"[kit] running {path} -> {out}  {shown}", file=stream, flush=True)
    t0 = time.perf_counter()
    failed = None
    try:
        with _env(KIT_HEADLESS="1"):
            papermill.execute_notebook(
                str(path), str(out), parameters=params, kernel_name=kernel, progress_bar=sys.stderr.isatty(),
                log_output=log_output, execution_timeout=cell_timeout)
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
        return 1
    print(f"[kit] ok {path.stem} in {dt:.1f} s -> {out}", file=stream, flush=True)
    return 0


# ----------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------
def _yes_no(claim: dict) -> str:
    from .results import verdict

    if claim.get("not_run"):                       # Run.skip: "not run at quick"
        return "not run"
    return {"holds": "yes", "does not hold": "no"}.get(verdict(claim), "undecided")


def summary_rows(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One row per ``<runs_dir>/*/metrics.json``: notebook, runtime_s, claims, hold, headline."""
    from .results import load_metrics

    rows = []
    for path in sorted(Path(runs_dir).glob("*/metrics.json")):
        try:
            m = load_metrics(path)
        except (ValueError, OSError) as e:
            rows.append({"notebook": path.parent.name, "runtime_s": None, "claims": 0, "hold": 0,
                         "headline": f"unreadable metrics.json: {e}"})
            continue
        claims = m["claims"]
        head = "; ".join(f"{c['id']} {_yes_no(c)}" for c in claims[:4])
        if len(claims) > 4:
            head += f"; +{len(claims) - 4} more"
        if claims:
            first = str(claims[0].get("claim", ""))
            head += f" -- {claims[0]['id']}: {first[:60]}{'...' if len(first) > 60 else ''}"
        rows.append({"notebook": m["notebook"], "runtime_s": m["runtime_s"], "claims": len(claims),
                     "hold": sum(1 for c in claims if c.get("holds") is True), "headline": head or "(no claims)"})
    return rows


def print_summary(profile: str, runs_dir_root: str | Path | None = None, stream=None) -> int:
    stream = stream or sys.stdout
    runs_dir = Path(runs_dir_root or runs_root()) / profile
    if not runs_dir.is_dir():
        print(f"[kit] no runs for profile {profile!r}: {runs_dir}/ does not exist. "
              f"Run `kit run NOTEBOOK --profile {profile}` or `kit run-all --profile {profile}` first.", file=stream)
        return 1
    rows = summary_rows(runs_dir)
    if not rows:
        print(f"[kit] no results in {runs_dir}/ (expected {runs_dir}/<notebook>/metrics.json)", file=stream)
        return 1
    w = max(8, *(len(r["notebook"]) for r in rows))
    print(f"results of profile {profile!r} ({runs_dir}/)", file=stream)
    print(f"{'notebook':<{w}}  {'runtime_s':>9}  {'claims':>6}  {'hold':>4}  headline", file=stream)
    for r in rows:
        rt = "-" if r["runtime_s"] is None else f"{float(r['runtime_s']):.1f}"
        print(f"{r['notebook']:<{w}}  {rt:>9}  {r['claims']:>6}  {r['hold']:>4}  {r['headline']}", file=stream)
    total, hold = sum(r["claims"] for r in rows), sum(r["hold"] for r in rows)
    print(f"{len(rows)} notebook(s), {hold} of {total} claims hold", file=stream)
    return 0


# ----------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------
def _cmd_run(args) -> int:
    params, leftovers = parse_params(args.param)
    notebook = args.notebook
    if notebook is None and len(leftovers) == 1:
        notebook, leftovers = leftovers[0], []
    if leftovers:
        raise CliError(f"-p expects KEY VALUE or KEY=VALUE; cannot read {' '.join(leftovers)!r}")
    if notebook is None:
        raise CliError("kit run: which notebook? e.g. `kit run 00_introduction`")
    return run_notebook(notebook, args.profile, params, args.out, args.cell_timeout, args.kernel, args.log_output)


def _cmd_run_all(args) -> int:
    books = list_notebooks()
    if not books:
        raise CliError(f"no notebooks {notebooks_dir()}/[0-9][0-9]_*.ipynb found (run kit from the project root)", 1)
    profile = args.profile or DEFAULT_PROFILE
    failed = []
    for nb in books:
        try:
            code = run_notebook(nb, profile, {}, args.out, args.cell_timeout, args.kernel, args.log_output)
        except CliError as e:
            print(f"[kit] FAILED {nb.stem}: {e}", flush=True)
            code = 1
        if code:
            failed.append(nb.stem)
    print(f"[kit] {len(books) - len(failed)} of {len(books)} notebooks ran"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    print_summary(profile)
    return 1 if failed else 0


def _cmd_summary(args) -> int:
    return print_summary(args.profile or DEFAULT_PROFILE, args.runs)


def _cmd_params(args) -> int:
    path = find_notebook(args.notebook)
    declared = notebook_parameters(path)
    if not declared:
        print(f"{path} has no cell tagged 'parameters'")
        return 1
    w = max(4, *(len(n) for n in declared))
    tw = max(4, *(len(p["type"]) for p in declared.values()))
    print(f"parameters of {path}:")
    print(f"  {'name':<{w}}  {'type':<{tw}}  default")
    for name, p in declared.items():
        helptext = f"  # {p['help']}" if p["help"] else ""
        print(f"  {name:<{w}}  {p['type']:<{tw}}  {p['default']}{helptext}")
    return 0


def _cmd_train(args) -> int:
    from . import distributed, methods
    from .config import resolve

    params, leftovers = parse_params(args.param)
    if leftovers:
        raise CliError(f"-p expects KEY VALUE or KEY=VALUE; cannot read {' '.join(leftovers)!r}")
    try:
        train_fn = methods.get(args.method)
        if args.out is not None:
            params["run_dir"] = args.out
        cfg = resolve(args.profile or DEFAULT_PROFILE, methods.config_method(args.method), **params)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    info = distributed.init_distributed()
    try:
        if info.rank == 0:
            print(f"[kit] training {args.method!r}, profile {cfg['profile']!r}, {info.world_size} process(es)"
                  + (f" ({info.backend}), global batch {cfg['batch_size'] * info.world_size}"
                     if info.world_size > 1 else ""), flush=True)
        t0 = time.perf_counter()
        path = train_fn(cfg)
        if info.rank == 0:
            print(f"[kit] trained {args.method!r} in {time.perf_counter() - t0:.1f} s"
                  + (f" -> {path}" if path else ""), flush=True)
    finally:
        distributed.cleanup()
    return 0


def _cmd_reproduce(args) -> int:
    from . import experiments
    from .machine import set_threads

    params, leftovers = parse_params(args.param)
    if leftovers:
        raise CliError(f"-p expects KEY VALUE or KEY=VALUE; cannot read {' '.join(leftovers)!r}")
    if args.list:
        for i in experiments.ids():
            e = experiments.get(i)
            print(f"{i:<22} {e.paper}: {e.reference} (notebook {e.notebook})")
        return 0
    if bool(args.all) == bool(args.experiment):
        raise CliError("name experiments (e.g. `kit reproduce ripu/table4`) or pass --all; "
                       "`kit reproduce --list` lists them")
    try:
        chosen = experiments.ids() if args.all else [experiments.get(i).id for i in args.experiment]
    except ValueError as e:
        raise CliError(str(e)) from None
    set_threads(params.pop("threads", None))
    profile = args.profile or DEFAULT_PROFILE
    for i in chosen:
        t0 = time.perf_counter()
        try:
            path = experiments.reproduce(i, profile, params, runs_dir=args.runs)
        except (ValueError, TypeError) as e:
            raise CliError(f"{i}: {e}") from None
        m = json.loads(path.read_text())
        print(f"[kit] {i}: {time.perf_counter() - t0:.0f} s -> {path}")
        for c in m["claims"]:
            print(f"  {c['id']}: {c.get('verdict')} -- {c['here']}")
    if args.page:
        from .report import write_results_page

        out = write_results_page(profile, Path("docs") / f"results-{profile}.md", args.runs or runs_root())
        print(f"[kit] wrote {out}")
    return 0


def _cmd_info(args) -> int:
    from . import machine

    machine.set_threads(None)            # measure with the threads a notebook would use
    d = machine.info(measure=not args.no_measure)
    print(json.dumps(d, indent=1) if args.json else machine.format_info(d))
    return 0


def _cmd_results_page(args) -> int:
    from .config import PROFILES
    from .report import write_results_page

    profile = args.profile or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise CliError(f"unknown profile {profile!r}; expected one of {list(PROFILES)}")
    runs = Path(args.runs) if args.runs else runs_root()
    if not (runs / profile).is_dir():
        raise CliError(f"no runs for profile {profile!r}: {runs / profile}/ does not exist. "
                       f"Run `kit run-all --profile {profile}` first.")
    out = write_results_page(profile, args.out or Path("docs") / f"results-{profile}.md", runs)
    print(f"[kit] wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kit", description="Run the kit's notebooks headless, summarise their "
                                 "results, train methods outside notebooks (also under torchrun).")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def common_run(p):
        p.add_argument("--profile", default=None, help=f"smoke | quick | full | paper (default {DEFAULT_PROFILE})")
        p.add_argument("--out", default=None, help="folder for the executed notebooks (default runs/<profile>)")
        p.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                       help="fail a cell that runs longer than this (default: no limit)")
        p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
        p.add_argument("--log-output", action="store_true", help="stream the cells' output to the terminal")

    p = sub.add_parser("run", help="run one notebook with papermill",
                       description="Run NOTEBOOK (a path, a stem like 00_introduction, or its prefix 00) with "
                       "papermill into runs/<profile>/<stem>.ipynb.")
    p.add_argument("notebook", nargs="?", help="path, stem or NN prefix of a notebook in notebooks/")
    p.add_argument("-p", "--param", nargs="+", action="append", metavar="KEY VALUE",
                   help="a parameter: -p KEY VALUE or -p KEY=VALUE (repeatable); must be declared by the notebook")
    common_run(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("run-all", help="run every notebooks/NN_*.ipynb, then print the summary")
    common_run(p)
    p.set_defaults(func=_cmd_run_all)

    p = sub.add_parser("summary", help="table of runs/<profile>/*/metrics.json")
    p.add_argument("--profile", default=None, help=f"default {DEFAULT_PROFILE}")
    p.add_argument("--runs", default=None, help="the runs folder (default: runs/ of the project)")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("results-page", help="write the results page (docs/results-<profile>.md) from "
                       "runs/<profile>/*/metrics.json")
    p.add_argument("--profile", default=None, help=f"default {DEFAULT_PROFILE}")
    p.add_argument("--runs", default=None, help="the runs folder (default: runs/ of the project)")
    p.add_argument("--out", default=None, help="the page (default docs/results-<profile>.md)")
    p.set_defaults(func=_cmd_results_page)

    p = sub.add_parser("reproduce", help="run paper experiments outside Jupyter (kit.experiments)",
                       description="Run the paper tables of the registry (kit.experiments) at a profile and write "
                       "runs/<profile>/reproduce/<id>/metrics.json, in the notebooks' format. Models come from the "
                       "notebooks' cache, so a table a notebook has computed is re-read in seconds.")
    p.add_argument("experiment", nargs="*", help="experiment ids, e.g. ripu/table4 (see --list)")
    p.add_argument("--all", action="store_true", help="every registered experiment")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--profile", default=None, help=f"smoke | quick | full | paper (default {DEFAULT_PROFILE})")
    p.add_argument("-p", "--param", nargs="+", action="append", metavar="KEY=VALUE",
                   help="override a config field of the experiment's method, e.g. -p SEEDS=[0,1]")
    p.add_argument("--runs", default=None, help="the runs folder (default: runs/ of the project)")
    p.add_argument("--page", action="store_true", help="then write the results page docs/results-<profile>.md "
                   "(the notebooks' runs and these experiments)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("params", help="the parameters a notebook declares, with defaults and types")
    p.add_argument("notebook")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("info", help="this machine: CPU and flags, GPU, the precision 'auto' picks, threads, "
                       "the quick step time and the minutes each notebook should take",
                       description="Describe this machine as the kit sees it. Run it first: it says whether bf16 "
                       "runs natively here and how long the notebooks will take at the quick profile.")
    p.add_argument("--no-measure", action="store_true", help="skip the few-second step-time measurement")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train a registered method (works under torchrun)",
                       description="Train METHOD outside the notebooks; saves runs/<profile>/train/<METHOD>.pt. "
                       "On N GPUs: torchrun --nproc_per_node=N -m kit train METHOD --profile paper")
    p.add_argument("method", help="a registered method, e.g. supervised")
    p.add_argument("--profile", default=None, help=f"default {DEFAULT_PROFILE}")
    p.add_argument("-p", "--param", nargs="+", action="append", metavar="KEY=VALUE",
                   help="override a config field (case-insensitive), e.g. -p ITERS=2000")
    p.add_argument("--out", default=None, help="folder for the checkpoint (default runs/<profile>/train)")
    p.set_defaults(func=_cmd_train)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """The ``kit`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("kit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
