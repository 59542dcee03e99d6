"""The results page: every notebook's claims and paper-vs-here table, generated from the
``metrics.json`` files of one profile's runs (``kit results-page --profile full``).

The page is written, never edited by hand: it names the machine and the date each run
recorded, every claim with its verdict and the effect sizes with their 95% intervals, and
the paper's numbers next to the kit's. A notebook without a run is listed as missing, one
whose last run failed (:func:`kit.results.mark_failed`) as failed, without the results of the
run before. A ``metrics.json`` that is not a readable record stops the page with an error
naming it, and :func:`write_results_page` writes no page without results (it would replace
a page that has them).
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from .cache import runs_root
from .hashing import atomic_write_bytes
from .results import failed, load_metrics, verdict
from .stats import mean_sd, seeds_needed

__all__ = ["PAPER_TABLES", "PER_SEED", "DIAGNOSES", "NOTEBOOKS", "results_page", "write_results_page"]

#: the notebooks of the kit, in order, with the paper each reproduces
NOTEBOOKS = {
    "00_introduction": "the toy world and its baselines",
    "01_adaptsegnet": "AdaptSegNet (Tsai et al., CVPR 2018)",
    "02_das3": "DAS3 (Wang, Liang, Zhang 2021)",
    "03_ripu": "RIPU (Xie et al., CVPR 2022)",
    "04_cdcl": "CDCL (Wang et al. 2021)",
    "05_ddep": "DeP / DDeP (Brempong et al. 2022)",
}

#: per notebook: the recorded result that puts the paper's numbers next to the kit's
PAPER_TABLES = {
    "00_introduction": "paper_vs_here",
    "01_adaptsegnet": "main_summary",
    "02_das3": "paper_vs_here",
    "03_ripu": "paper_vs_here",
    "04_cdcl": "main_gains",
    "05_ddep": "label_fraction_curve",
}
#: per notebook: the recorded diagnoses of its claims (result name -> what it shows); tables with
#: a ``seed`` column are shown as the mean over seeds per value of their first column
DIAGNOSES = {
    "00_introduction": {"level_probes": "P2, AdaptSegNet's multi-level premise: linear probes of the source-only "
                                        "model's levels, mIoU on source and target val"},
    "01_adaptsegnet": {"lambda_wide_turn": "C3: the λ_adv sweep continued beyond the paper's range (section 2.2b)"},
    "02_das3": {"atp_ablation_effects": "C6: the authors' stage 3 with one ingredient changed at a time (section 4c)"},
    "03_ripu": {"length_diagnosis": "C1 against the training length (section 6b)",
                "label_geometry": "C2: what each annotation unit's labels cover, % (section 6c)",
                "c3_diagnosis": "C3: the same fine-tuning with every pool label (section 6c)"},
    "04_cdcl": {"length_diagnosis": "C2 and C3 at 4x the iterations (section 8b)",
                "c5b_diagnosis": "C5b: the one-step-per-dataset rule at the same number of optimizer steps (section 6)"},
    "05_ddep": {"length_diagnosis": "C1-C3 against the fine-tuning length (section 5b)"},
}
#: per notebook whose paper table is recorded per seed: the columns that name a row, and the
#: measured column, shown as mean ± sd over the seeds
PER_SEED = {"05_ddep": (["init", "fraction (%)"], "mIoU")}


def _over_seeds(rows: list[Mapping[str, Any]], keys: list[str], value: str) -> list[dict]:
    """Rows recorded per seed -> one row per ``keys`` with the mean ± sd of ``value`` over seeds
    (no sd for a single seed)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        v = r.get(value)
        if isinstance(v, (int, float)) and math.isfinite(v):
            groups.setdefault(tuple(r.get(k) for k in keys), []).append(float(v))
    out = []
    for k, vals in groups.items():
        mean, sd = mean_sd(vals)
        out.append({**dict(zip(keys, k)), f"{value} (mean)": mean, "sd": sd if len(vals) > 1 else None,
                    "seeds": len(vals)})
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.2f}".rstrip("0").rstrip(".")
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> list[str]:
    rows = list(rows)
    if not rows:
        return ["(empty)"]
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return out


def _machine(m: Mapping[str, Any] | None) -> str:
    if not m:
        return "not recorded"
    bits = [m.get("cpu") or "?", f"{m.get('threads', '?')} threads", f"torch {m.get('torch', '?')}",
            f"kernels {m.get('cpu_capability', '?')}"]
    if m.get("onednn_max_cpu_isa"):
        bits.append(f"ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa']}")
    if m.get("gpu"):
        bits.append(f"GPU {m['gpu']}")
    bits.append(f"precision {m.get('precision', '?')}")
    return ", ".join(bits)


def _undecided_budget(claims: Iterable[Mapping[str, Any]]) -> Iterable[dict]:
    """One row per undecided effect of the undecided claims: what it would take to decide it."""
    for c in claims:
        if c.get("not_run") or verdict(c) != "undecided":
            continue
        for label, e in (c.get("effects") or {}).items():
            if e.get("verdict") != "undecided":
                continue
            mean, sd = e.get("mean"), e.get("sd")
            ok = isinstance(mean, (int, float)) and isinstance(sd, (int, float))
            need = seeds_needed(mean, sd, e.get("confidence") or 0.95) if ok else None
            yield {"id": c["id"], "effect": label or "effect", "mean": f"{mean:+.3g}" if ok else mean,
                   "sd": f"{sd:.3g}" if ok and math.isfinite(sd) else None, "seeds now": e.get("n"),
                   "seeds needed": need if need is not None else
                   ("no estimate (one seed or unpaired)" if not ok or not math.isfinite(sd) else
                    "no effect measured" if mean == 0 else "more than 10000")}


def _failed_line(m: Mapping[str, Any], path: Path, profile: str) -> str:
    """The line a notebook or experiment whose last run failed gets instead of its results."""
    kept = (f" the record of the run before it is kept in `{path}` under `previous`"
            if m.get("previous") else " no earlier run is recorded")
    error = _cell(m.get("error") or "no error recorded")
    return (f"**The last run at profile `{profile}` failed** ({m.get('date', 'date not recorded')}): {error}. "
            f"Its results are not shown;{kept}.")


def _reproduced(base: Path, status: dict[str, list[str]]) -> list[str]:
    """The section of the experiments run by ``kit reproduce`` (``<base>/reproduce/**/metrics.json``):
    per experiment, its claims and its paper-vs-here table. Their claims are not added to the
    notebooks' tally above them (the notebooks decide the same claims on the same models).
    Adds each experiment's name to ``status["ok"]`` or ``status["failed"]``."""
    paths = sorted((base / "reproduce").rglob("metrics.json")) if (base / "reproduce").is_dir() else []
    if not paths:
        return []
    out = ["", "## Experiments run by `kit reproduce`", "",
           "The registry's paper tables (`kit.experiments`), each run outside Jupyter on the same model cache "
           "as the notebooks; a claim here is the same function of the same table the notebook records."]
    for path in paths:
        m = load_metrics(path)
        if failed(m):
            status["failed"].append(m["notebook"])
            out += ["", f"### `{m['notebook']}`", "", _failed_line(m, path, m["profile"])]
            continue
        status["ok"].append(m["notebook"])
        cfg = m.get("config") or {}
        out += ["", f"### `{m['notebook']}` · {cfg.get('paper', '')}: {cfg.get('reference', '')}", "",
                f"Run {m.get('date', 'date not recorded')}, seeds {m['seeds']}, {m['runtime_s']:.0f} s; "
                f"machine: {_machine(m.get('machine'))}.", ""]
        rows = [{"id": c["id"], "claim": c["claim"], "here": c["here"], "verdict": verdict(c)} for c in m["claims"]]
        out += _table(rows, ["id", "claim", "here", "verdict"]) if rows else ["(no claim)"]
        table = m["results"].get("paper_vs_here")
        if table:
            out += ["", *_table(table)]
    return out


def _mean_over_seeds(rows: list[Mapping[str, Any]]) -> list[dict]:
    """Rows with a ``seed`` column -> one row per value of the first other column: the mean of each
    numeric column over the seeds (with ``seeds``, how many)."""
    key = next(k for k in rows[0] if k != "seed")
    out: dict[Any, dict] = {}
    for r in rows:
        o = out.setdefault(r[key], {key: r[key], "_n": 0})
        o["_n"] += 1
        for k, v in r.items():
            if k not in (key, "seed") and isinstance(v, (int, float)) and not isinstance(v, bool):
                o[k] = o.get(k, 0.0) + float(v)
    return [{**{k: (v / o["_n"] if k not in (key, "_n") else v) for k, v in o.items() if k != "_n"}, "seeds": o["_n"]}
            for o in out.values()]


def results_page(profile: str, runs_dir: str | Path | None = None) -> str:
    """The Markdown of the results page for ``profile`` from ``<runs_dir>/<profile>/*/metrics.json``.
    Raises ValueError naming a ``metrics.json`` that is not a readable record."""
    return _page(profile, runs_dir)[0]


def _page(profile: str, runs_dir: str | Path | None = None) -> tuple[str, dict[str, list[str]]]:
    """:func:`results_page` and the notebooks and experiments it shows, ``{"ok": [...], "failed": [...]}``
    (those with results, those whose last run failed)."""
    base = Path(runs_dir or runs_root()) / profile
    counts = {"holds": 0, "does not hold": 0, "undecided": 0, "not run": 0}
    status: dict[str, list[str]] = {"ok": [], "failed": []}
    sections: list[str] = []
    for nb, title in NOTEBOOKS.items():
        path = base / nb / "metrics.json"
        sections += ["", f"## {nb} · {title}", ""]
        if not path.exists():
            sections.append(f"No run at profile `{profile}` (`{path}` does not exist).")
            continue
        m = load_metrics(path)
        if failed(m):
            status["failed"].append(nb)
            sections.append(_failed_line(m, path, profile))
            continue
        status["ok"].append(nb)
        sections.append(f"Run {m.get('date', 'date not recorded')}, seeds {m['seeds']}, {m['runtime_s']:.0f} s; "
                        f"machine: {_machine(m.get('machine'))}.")
        sections += ["", "**Claims**", ""]
        rows = []
        for c in m["claims"]:
            v = verdict(c)
            counts["not run" if c.get("not_run") else v if v in counts else "undecided"] += 1
            rows.append({"id": c["id"], "claim": c["claim"], "paper": c["paper"], "here": c["here"], "verdict": v})
        sections += _table(rows, ["id", "claim", "paper", "here", "verdict"])
        budget = list(_undecided_budget(m["claims"]))
        if budget:
            sections += ["", "**Undecided effects: the seeds that would decide them** (80% power at 95% "
                         "confidence if the measured mean and seed-to-seed sd were the truth; "
                         "`kit.results.seeds_needed`)", ""]
            sections += _table(budget, ["id", "effect", "mean", "sd", "seeds now", "seeds needed"])
        table = m["results"].get(PAPER_TABLES.get(nb, ""))
        if isinstance(table, list) and table:
            note = ""
            if nb in PER_SEED and all("seed" in r for r in table):
                table, note = _over_seeds(table, *PER_SEED[nb]), ", mean ± sd over seeds"
            sections += ["", f"**Paper vs here** (`{PAPER_TABLES[nb]}`{note})", ""]
            sections += _table(table)
        recipe = m["results"].get("recipe_check")
        if recipe:
            sections += ["", "**Recipe check on a tuning split** (the value the target's test split, used by no "
                         "claim, would pick next to the default; `kit.recipes`)", ""]
            sections += _table([recipe] if isinstance(recipe, dict) else recipe)   # one row, or one per parameter
        for name, what in DIAGNOSES.get(nb, {}).items():
            diag = m["results"].get(name)
            if isinstance(diag, list) and diag:
                per_seed = all("seed" in r for r in diag)
                sections += ["", f"**Diagnosis: {what}** (`{name}`{', mean over seeds' if per_seed else ''})", ""]
                sections += _table(_mean_over_seeds(diag) if per_seed else diag)
    sections += _reproduced(base, status)
    head = [
        f"# Results at the `{profile}` profile",
        "",
        f"Generated by `kit results-page --profile {profile}` (or `kit reproduce --all --profile {profile} "
        f"--page`) from `runs/{profile}/*/metrics.json` on "
        f"{_dt.date.today().isoformat()}; do not edit by hand. Each claim's verdict comes from an effect "
        "size over seeds with its 95% t interval, paired by seed where the seeds pair "
        "(`kit.results.effect`): holds (interval above 0), does not hold (below), undecided "
        "(straddles 0), or not run at this profile. A run's time counts only the models it trained: "
        "models already in the cache (shared by every notebook and profile) load in seconds, so "
        "the time of a run on a warm cache is not the time of a cold one (`benchmarks/RESULTS.md` "
        "has the timed runs).",
        "",
        "| verdict | claims |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in counts.items()],
    ]
    if status["failed"]:
        head += ["", f"Last run failed, so no results are shown for: {', '.join(f'`{n}`' for n in status['failed'])} "
                 "(the section of each says why)."]
    return "\n".join(head + sections) + "\n", status


def write_results_page(profile: str, out: str | Path, runs_dir: str | Path | None = None) -> Path:
    """Write :func:`results_page` to ``out`` (atomically); returns the path.

    Refuses (ValueError naming ``out`` and the profile; nothing is written) when no notebook and
    no ``kit reproduce`` experiment of ``profile`` has results -- e.g. after only ``kit train``, or
    when every last run failed: such a page says nothing, and it would replace a page that has
    results. It is refused where no page exists yet too, so that the rule does not depend on
    what ``out`` holds. Raises ValueError naming ``out`` and a ``metrics.json`` that is not a readable
    record.
    """
    out = Path(out)
    try:
        page, status = _page(profile, runs_dir)
    except ValueError as e:   # a metrics.json that is not a readable record (named in the message)
        raise ValueError(f"not writing {out}: {e}") from None
    if not status["ok"]:
        base = Path(runs_dir or runs_root()) / profile
        why = (f"the last run of {', '.join(status['failed'])} failed" if status["failed"] else
               f"there is no {base}/<notebook>/metrics.json nor {base}/reproduce/**/metrics.json")
        kept = f"; {out} is left as it was" if out.exists() else ""
        raise ValueError(f"not writing {out}: no run at profile {profile!r} has results ({why}){kept}. "
                         f"Run `kit run-all --profile {profile}` or `kit reproduce --all --profile {profile}` first.")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode())
    return out
