"""``kit``: run the notebooks headless, summarise their results, train outside notebooks.

::

    kit run 00_introduction --profile paper -p DATA_ROOT /data -p SEEDS "[0,1,2]"
    kit run 01 --profile smoke --cell-timeout 600      # a stem or its two-digit prefix
    kit run-all --profile quick                         # every notebooks/NN_*.ipynb, then the summary
    kit summary --profile quick                         # runs/quick/*/metrics.json as a table
    kit results-page --profile full                     # docs/results-full.md from runs/full/*/metrics.json
    kit params 01_adaptsegnet                           # the parameters a notebook declares
    kit train source_only --profile smoke -p ITERS=20    # one process ...
    torchrun --nproc_per_node=4 -m kit train source_only --profile paper   # ... or N GPUs

``kit run`` executes a notebook with papermill into ``runs/<profile>/<stem>.ipynb`` with
``PROFILE=<profile>`` and the ``-p`` parameters. Unlike papermill, which only warns, it
rejects a parameter the notebook's ``parameters`` cell does not declare (exit code 2),
before starting a kernel. Values are read as papermill's ``-p`` reads them (``True``,
``False``, ``None``, ints, floats, else strings) and JSON lists/objects (``[0,1,2]``).
The kernel gets ``KIT_HEADLESS=1`` (widgets render their static figure). Relative paths
(``runs/``, the cache) are relative to the directory ``kit`` is started in, which is
also the kernel's working directory.

A notebook run that fails marks the notebook's previous ``metrics.json`` as failed
(:func:`kit.results.mark_failed`): ``kit summary`` and the results page show the failure, not
the earlier results as current. ``kit results-page`` writes no page without results and stops
at a ``metrics.json`` that is not a readable record, naming it; the page is then left as it was.

Exit codes: 0 success; 1 a notebook or training failed, or nothing to summarise (or to put on
a results page); 2 a usage error (unknown notebook, parameter, method or profile).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .cache import runs_root
# the notebooks are found, inspected and run by kit/notebook_runner.py (imported here so that
# kit.cli.run_notebook & co. keep working)
from .notebook_runner import (
    DEFAULT_PROFILE, CliError, find_notebook, list_notebooks, notebook_parameters, notebooks_dir, run_notebook,
)

__all__ = ["main", "parse_value", "parse_params", "find_notebook", "notebook_parameters", "run_notebook",
           "summary_rows", "CliError"]


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
# Summary
# ----------------------------------------------------------------------------------
def _yes_no(claim: dict) -> str:
    from .results import verdict

    if claim.get("not_run"):                       # Run.skip: "not run at quick"
        return "not run"
    return {"holds": "yes", "does not hold": "no"}.get(verdict(claim), "undecided")


def summary_rows(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One row per ``<runs_dir>/*/metrics.json``: notebook, runtime_s, claims, hold, headline and
    status ("ok", "failed": the last run failed and its earlier results are not counted, or
    "unreadable": the file is not a readable record, named in the headline)."""
    from .results import failed, load_metrics

    rows = []
    for path in sorted(Path(runs_dir).glob("*/metrics.json")):
        try:
            m = load_metrics(path)
        except (ValueError, OSError) as e:
            rows.append({"notebook": path.parent.name, "runtime_s": None, "claims": 0, "hold": 0,
                         "headline": f"unreadable metrics.json: {e}", "status": "unreadable"})
            continue
        if failed(m):
            error = " ".join(str(m.get("error") or "no error recorded").split())
            rows.append({"notebook": m["notebook"], "runtime_s": m["runtime_s"], "claims": 0, "hold": 0,
                         "headline": f"LAST RUN FAILED ({m.get('date', 'date not recorded')}): "
                                     f"{error[:160]}{'...' if len(error) > 160 else ''}; earlier results not counted",
                         "status": "failed"})
            continue
        claims = m["claims"]
        head = "; ".join(f"{c['id']} {_yes_no(c)}" for c in claims[:4])
        if len(claims) > 4:
            head += f"; +{len(claims) - 4} more"
        if claims:
            first = str(claims[0].get("claim", ""))
            head += f" -- {claims[0]['id']}: {first[:60]}{'...' if len(first) > 60 else ''}"
        rows.append({"notebook": m["notebook"], "runtime_s": m["runtime_s"], "claims": len(claims),
                     "hold": sum(1 for c in claims if c.get("holds") is True), "headline": head or "(no claims)",
                     "status": "ok"})
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
    bad = [f"{sum(r['status'] == k for r in rows)} {k}" for k in ("failed", "unreadable")
           if any(r["status"] == k for r in rows)]
    print(f"{len(rows)} notebook(s), {hold} of {total} claims hold" + (f" ({', '.join(bad)})" if bad else ""),
          file=stream)
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


def _jobs_arg(value: str) -> int | str:
    """``--jobs`` as the notebooks' ``JOBS``: a positive number or "auto"."""
    from .jobs import resolve_jobs

    try:
        resolve_jobs(value)
    except ValueError as e:
        raise CliError(str(e)) from None
    return "auto" if value.strip().lower() == "auto" else int(value)


def _cmd_run_all(args) -> int:
    books = list_notebooks()
    if not books:
        raise CliError(f"no notebooks {notebooks_dir()}/[0-9][0-9]_*.ipynb found (run kit from the project root)", 1)
    profile = args.profile or DEFAULT_PROFILE
    jobs = None if args.jobs is None else _jobs_arg(args.jobs)
    failed = []
    for nb in books:
        # JOBS goes to the notebooks that declare it (a notebook of your own may not)
        params = {"JOBS": jobs} if jobs is not None and "JOBS" in notebook_parameters(nb) else {}
        try:
            code = run_notebook(nb, profile, params, args.out, args.cell_timeout, args.kernel, args.log_output)
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
    from .fit import train

    params, leftovers = parse_params(args.param)
    if leftovers:
        raise CliError(f"-p expects KEY VALUE or KEY=VALUE; cannot read {' '.join(leftovers)!r}")
    try:
        method = methods.get(args.method)
        if args.out is not None:
            params["run_dir"] = args.out
        cfg = resolve(args.profile or DEFAULT_PROFILE, method.config, **params)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    info = distributed.init_distributed()
    ok = False
    try:
        if info.rank == 0:
            print(f"[kit] training {args.method!r}, profile {cfg['profile']!r}, {info.world_size} process(es)"
                  + (f" ({info.backend}), global batch {cfg['batch_size'] * info.world_size}"
                     if info.world_size > 1 else ""), flush=True)
        t0 = time.perf_counter()
        path = train(args.method, cfg)
        if info.rank == 0:
            print(f"[kit] trained {args.method!r} in {time.perf_counter() - t0:.1f} s"
                  + (f" -> {path}" if path else ""), flush=True)
        ok = True
    finally:
        distributed.cleanup(sync=ok)
    return 0


def _cmd_reproduce(args) -> int:
    from . import experiments
    from .jobs import JobError
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
    threads = set_threads(params.pop("threads", None))   # sampled once: the workers share these
    profile = args.profile or DEFAULT_PROFILE
    if len(chosen) > 1:     # one pool of workers for every experiment's models, then each table
        try:
            for i in chosen:
                experiments.get(i).config(profile, **dict.fromkeys(params))   # names first: a typo trains nothing
            experiments.prefetch(chosen, profile, params, jobs=args.jobs, threads=threads)
        except (ValueError, TypeError) as e:
            raise CliError(str(e)) from None
        except JobError as e:   # the table that needs the failed model runs it again and reports it
            print(f"[kit] {str(e).splitlines()[0]}; the experiments that need those models run them again below",
                  flush=True)
    for i in chosen:
        t0 = time.perf_counter()
        try:
            path = experiments.reproduce(i, profile, params, runs_dir=args.runs,
                                         jobs=args.jobs if len(chosen) == 1 else 1, threads=threads)
        except (ValueError, TypeError) as e:
            raise CliError(f"{i}: {e}") from None
        m = json.loads(path.read_text())
        print(f"[kit] {i}: {time.perf_counter() - t0:.0f} s -> {path}")
        for c in m["claims"]:
            print(f"  {c['id']}: {c.get('verdict')} -- {c['here']}")
    if args.page:
        _write_page(profile, Path("docs") / f"results-{profile}.md", args.runs or runs_root())
    return 0


def _write_page(profile: str, out: Path, runs: Path | str) -> None:
    """Write the results page; a page without results or an unreadable metrics.json is an error
    (exit 1) naming the file, and leaves ``out`` as it was."""
    from .report import write_results_page

    try:
        out = write_results_page(profile, out, runs)
    except ValueError as e:
        raise CliError(str(e), 1) from None
    print(f"[kit] wrote {out}")


def _cmd_info(args) -> int:
    from . import info, machine

    machine.set_threads(None)            # measure with the threads a notebook would use
    d = info.info(measure=not args.no_measure)
    print(json.dumps(d, indent=1) if args.json else info.format_info(d))
    return 0


def _cmd_results_page(args) -> int:
    from .config import PROFILES

    profile = args.profile or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise CliError(f"unknown profile {profile!r}; expected one of {list(PROFILES)}")
    runs = Path(args.runs) if args.runs else runs_root()
    if not (runs / profile).is_dir():
        raise CliError(f"no runs for profile {profile!r}: {runs / profile}/ does not exist. "
                       f"Run `kit run-all --profile {profile}` first.")
    _write_page(profile, Path(args.out) if args.out else Path("docs") / f"results-{profile}.md", runs)
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
    p.add_argument("--jobs", default=None, metavar="N|auto",
                   help="each notebook's JOBS: its models trained N at a time, each worker with its share of the "
                        "cores (default: the notebooks' own, auto; see `kit info`)")
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
    p.add_argument("--jobs", default="auto", metavar="N|auto",
                   help="train the models an experiment needs N at a time, each worker with its share of the "
                   "cores (default auto: one per free core, as memory allows; see `kit info`); the keys do not "
                   "depend on it, and each model's weights only through its threads (the order of sums)")
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
    p.add_argument("method", help="a registered method (kit.methods.names()), e.g. source_only")
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
