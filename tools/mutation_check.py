#!/usr/bin/env python3
"""Each rewritten test of issue 14 fails on a deliberately broken implementation (mutation check).

Issue 14 asked that no test assert a tautology: a fixed test must fail when the code it guards is
wrong. For every entry of `MUTATIONS` this script makes a scratch copy of the repository (the
package, tests, notebooks, tools and settings; never `.venv`, `runs/` or `.git`), replaces one
exact string in one file of the copy's `spectra_ml/` (a mutation whose text does not occur exactly
once is refused, so none can silently become a no-op), and runs the mutation's pytest node ids in
the copy with the copy first on `PYTHONPATH` (the copy's `spectra_ml`, not the editable install, is
imported, also by the pipeline's papermill kernels; checked before every run). Where the guarded
code runs inside a pipeline stage, which executes its own notebook's definitions, the same text is
also replaced in the notebook cell the module was exported from (`in_notebook`), as the bug would be
written in nbdev. The mutant is *caught* when those tests fail. With `--baseline` the same node
ids are first run once (one pytest process) on the unmutated copy, where they must pass. The result
is a Markdown table, printed and optionally written to `--out`; the exit status is 1 if a mutant
survives or a baseline test does not pass.

    python tools/mutation_check.py --baseline --out /tmp/mutation.md
    python tools/mutation_check.py --only fs_eq10_drops_model_variance fig5_transposed_cells
    python tools/mutation_check.py --list
    python tools/mutation_check.py --baseline-only   # the unmutated run alone

Mutations whose tests need the session's quick papermill run (`quick_run`, a few minutes per
pytest process) say so in their `tests` comment; those marked `slow` (over ~6 minutes) run only
with `--include-slow`. Run with SPECTRA_ML_LOCAL_DATA set (the F&S flag test reads the mirror).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What a scratch copy holds (relative to the repository root; missing ones are skipped).
COPIED = (
    "spectra_ml",
    "tests",
    "nbs",
    "tools",
    "data",
    "settings.ini",
    "pyproject.toml",
    "setup.py",
    "README.md",
)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", ".pytest_cache")

TM = "tests/test_models.py::"
TF = "tests/test_figures.py::"
TD = "tests/test_pipeline_demo.py::"
TE = "tests/test_ensemble.py::"

#: name, file, old -> new (exact, once), why (the wrong implementation), tests (pytest node ids);
#: in_notebook: also in the notebook cell the code is exported from (a stage run by papermill
#: executes its notebook's own definitions, not the module's); slow: run only with --include-slow.
MUTATIONS = [
    {
        "name": "fs_eq10_drops_model_variance",
        "file": "spectra_ml/models.py",
        "old": "s = torch.log(var_label + var_model + var_input + torch.exp(log_var_excess))",
        "new": "s = torch.log(var_label + var_input + torch.exp(log_var_excess))",
        "why": "F&S Eq. 10 without σ²_model in s (the old bug: no dropout scatter in the loss).",
        "tests": [TM + "test_fallows_sanders_eq10_every_term_against_numpy"],
    },
    {
        "name": "aspgap_alpha1_on_both_branches",
        "file": "spectra_ml/models.py",
        "old": "(0.5 * alpha_h * (y - mu_h) ** 2 / s2).sum()",
        "new": "(0.5 * alpha * (y - mu_h) ** 2 / s2).sum()",
        "why": "AspGap Eq. 3's hallucinator term weighted by α_1 (copy-paste) instead of α_2.",
        "tests": [TM + "test_aspgap_eq3_both_branches_every_term_against_numpy"],
    },
    {
        "name": "aspgap_lambda_outside_1_over_n",
        "file": "spectra_ml/models.py",
        "old": "return (data + 0.5 * torch.log(s2).sum() + l1 * l1_norm + kl_weight * kl) / len(y)",
        "new": "return (data + 0.5 * torch.log(s2).sum()) / len(y) + l1 * l1_norm + kl_weight * kl",
        "why": "AspGap Eq. 3 with Λ1‖θ‖₁ and Λ2 Σ KL outside the 1/N bracket (un-normalised Λ).",
        "tests": [TM + "test_aspgap_eq3_both_branches_every_term_against_numpy"],
    },
    {
        "name": "calibration_fitted_on_held_out_rows",
        "file": "spectra_ml/metrics.py",
        "old": 'd = pred[(pred["split"] == split).to_numpy()',
        "new": 'd = pred[(pred["split"] != "train").to_numpy()',
        "why": "The σ scale fitted on every held-out row (validation and test), not validation.",
        "tests": [TD + "test_summary_numbers"],  # quick_run
        "in_notebook": True,  # the 11_metrics stage runs the notebook's own fit_calibration
    },
    {
        "name": "calibration_reports_raw_z_std",
        "file": "spectra_ml/metrics.py",
        "old": 'mlp["z_std_calibrated"] = cal["z_std"]',
        "new": 'mlp["z_std_calibrated"] = mlp["z_std"]',
        "why": "The uncalibrated z-std reported as the calibrated one.",
        # the pipeline cannot show it: 11_metrics' own example cell fails first under papermill
        "tests": ["tests/test_metrics.py::test_calibrated_tables_find_the_factor_two"],
    },
    {
        "name": "fig5_transposed_cells",
        "file": "spectra_ml/tagging.py",
        "old": 'm = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])',
        "new": 'm = np.array([[c["tn"], c["fn"]], [c["fp"], c["tp"]]])',
        "why": "Kane Fig. 5 with the fp and fn cells swapped (truth drawn on the wrong axis).",
        "tests": [TF + "test_fig5_cells_are_the_confusion_matrix"],
    },
    {
        "name": "feh_bins_rmse_in_the_bias_panel",
        "file": "spectra_ml/metrics.py",
        "old": 'axs[0, j].plot(x, d.bias, "o-", ms=3, label=name)',
        "new": 'axs[0, j].plot(x, d.rmse, "o-", ms=3, label=name)',
        "why": "The [Fe/H]-bin figure draws the RMSE in the bias row (copy-paste of the next row).",
        "tests": [TF + "test_feh_bin_figure_draws_the_tables_bias_and_rmse"],  # quick_run
    },
    {
        "name": "purity_curve_drawn_twice",
        "file": "spectra_ml/tagging.py",
        "old": 'ax.plot(curve[x], curve.completeness, label="completeness")',
        "new": 'ax.plot(curve[x], curve.purity, label="completeness")',
        "why": "The purity-completeness figure draws purity under the completeness label.",
        "tests": [TF + "test_purity_completeness_figure_draws_the_curve"],
    },
    {
        "name": "fig3_drops_stars_beyond_the_axes",
        "file": "spectra_ml/metrics.py",
        "old": "yc, mc, rc = np.clip(y[ok], *lim), np.clip(mu[ok], *lim), np.clip(res, -rl, rl)",
        "new": "yc, mc, rc = y[ok], mu[ok], res",
        "why": "Kane Fig. 3 before 9e93057: stars beyond the percentile axes drawn nowhere.",
        "tests": [TF + "test_fig3_holds_every_test_star_and_titles_the_summarys_rmse"],  # quick_run
    },
    {
        "name": "alpha_precision_over_true_count",
        "file": "spectra_ml/tagging.py",
        "old": '"precision": tp / max(int(((p == c) & both).sum()), 1),',
        "new": '"precision": tp / max(int(((t == c) & both).sum()), 1),',
        "why": "The α stand-in's per-class precision over the true count (that is the recall).",
        "tests": [TD + "test_cluster_and_candidate_stages_in_the_pipeline"],  # quick_run
        "in_notebook": True,  # the 13_tagging stage runs the notebook's own class_precision_recall
    },
    {
        "name": "acceptance_sums_wins_over_models",
        "file": "spectra_ml/compare.py",
        "old": 'out["n_better"] = int(wins.max()) if len(wins) else 0',
        "new": 'out["n_better"] = int(wins.sum()) if len(wins) else 0',
        "why": "The labels beating Kane by 10% summed over all models (can exceed the labels).",
        # survived the pipeline tests (they compare the summary with acceptance() of the table, the
        # same function); the hand-counted table test was written for it
        "tests": ["tests/test_compare.py::test_acceptance_counts_wins_per_model_on_a_hand_table"],
    },
    {
        "name": "summary_acceptance_against_a_config_name",
        "file": "spectra_ml/compare.py",
        "old": "acc = acceptance(table)",
        "new": 'acc = acceptance(table, reference="kane")',
        "why": "The summary's acceptance against 'kane' (a config, not a model): nothing to beat.",
        "tests": ["tests/test_compare.py::test_compare_models_on_real_rows"],
    },
    {
        "name": "adam_lr_of_the_wrong_member",
        "file": "spectra_ml/training.py",
        "old": "r = torch.as_tensor(lrs / top, dtype=ps[0].dtype)",
        "new": "r = torch.as_tensor(np.roll(lrs, 1) / top, dtype=ps[0].dtype)",
        "why": "Batched Adam scales each member's step by its neighbour's learning rate.",
        "tests": [TE + "test_adam_with_a_learning_rate_per_member_is_torch_adam_per_member"],
    },
    {
        "name": "stopped_members_reset_adam_moments",
        "file": "spectra_ml/training.py",
        "old": "stacked_adam(list(params.values()), config.lr, config.weight_decay, st)",
        "new": "stacked_adam(list(params.values()), config.lr, config.weight_decay)",
        "why": "When a member leaves the stack the others restart Adam (moments and steps lost).",
        "tests": [TE + "test_batched_members_equal_the_member_loop"],
    },
    {
        "name": "batched_plateau_ignores_lr_factor",
        "file": "spectra_ml/training.py",
        "old": "config.lr_patience or 10**9, config.min_lr, config.lr_factor)",
        "new": "config.lr_patience or 10**9, config.min_lr, 0.5)",
        "why": "The batched members halve their lr on a plateau whatever lr_factor (Guiglion: 0.1) says.",
        "tests": [TE + "test_batched_members_equal_the_member_loop"],
    },
    {
        "name": "fs_flag_bits_one_based",
        "file": "spectra_ml/samples.py",
        "old": "mask = sum(1 << (n if table is None else table[n]) for n in names)",
        "new": "mask = sum(1 << (n - 1 if table is None else table[n]) for n in names)",
        "why": "F&S flag cuts reading APOGEE's 0-based bit numbers as 1-based.",
        "tests": [
            "tests/test_training_schedule.py::test_fallows_sanders_cuts_on_real_apogee_flags"
        ],
    },
    {
        "name": "flat_scaled_size_counts_rows_outside",
        "file": "spectra_ml/models.py",
        "old": "else per_bin or max(1, inside.sum() // max(1, len(occupied)))",
        "new": "else per_bin or max(1, len(fe) // max(1, len(occupied)))",
        "why": "AspGap's scaled flat size counts the rows outside the bin edges too.",
        # survived the real-sample test (48 of 2,067 quick-sample rows lie outside, fewer than its
        # 83 occupied bins: the same size); the hand-made test with 50 rows outside was written for it
        "tests": [TM + "test_flat_resampling_scaled_size_ignores_rows_outside_the_edges"],
    },
    {
        "name": "flat_scaled_size_over_every_bin",
        "file": "spectra_ml/models.py",
        "old": "else per_bin or max(1, inside.sum() // max(1, len(occupied)))",
        "new": "else per_bin or max(1, inside.sum() // ((len(ef) - 1) * (len(ea) - 1)))",
        "why": "AspGap's scaled flat size divides by every bin of the grid, not the occupied ones.",
        "tests": [TM + "test_flat_resampling_scaled_reading_keeps_the_row_count"],  # quick_run
    },
    {
        "name": "training_rows_ignore_flat_per_bin",
        "file": "spectra_ml/training.py",
        "old": 'flat_resample(fe, al, per_bin=topt["flat_per_bin"], seed=cfg.seed)',
        "new": "flat_resample(fe, al, seed=cfg.seed)",
        "why": "Training draws AspGap's 1,000 per bin whatever the config's flat_per_bin says.",
        "tests": ["tests/test_ablation.py::test_aspgap_flat_config_trains_on_the_flat_rows"],
    },
]


def scratch_copy(root: Path = ROOT) -> Path:
    "A fresh copy of what the tests need, in a new `mutation_*` temporary folder."
    dst = Path(tempfile.mkdtemp(prefix="mutation_"))
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=IGNORED)
        elif src.is_file():
            shutil.copy2(src, dst / name)
    return dst


def _once(text: str, m: dict, where: str) -> str:
    "`text` with the mutation's `old` replaced by `new`; refused unless `old` occurs exactly once."
    n = text.count(m["old"])
    if n != 1:
        raise SystemExit(f"{m['name']}: {m['old']!r} occurs {n} times in {where}, not once")
    return text.replace(m["old"], m["new"])


def mutated_files(root: Path, m: dict) -> dict:
    """Relative path -> mutated text, for the module and (with `in_notebook`) the notebook cell it
    was exported from (the `# %% ../nbs/NAME.ipynb #ID` line above the mutated text)."""
    if not m["file"].startswith("spectra_ml/"):
        raise SystemExit(f"{m['name']}: mutations go in spectra_ml/, not {m['file']}")
    src = (root / m["file"]).read_text()
    out = {m["file"]: _once(src, m, m["file"])}
    if not m.get("in_notebook"):
        return out
    head = re.findall(
        r"^# %% \.\./(nbs/[^ ]+\.ipynb) #(\w+)$", src[: src.index(m["old"])], re.MULTILINE
    )
    if not head:
        raise SystemExit(f"{m['name']}: no '# %% ../nbs/...' cell line above the mutation")
    nb_path, cell_id = head[-1]
    nb = json.loads((root / nb_path).read_text())
    cells = [c for c in nb["cells"] if c.get("id") == cell_id]
    if len(cells) != 1:
        raise SystemExit(f"{m['name']}: {len(cells)} cells with id {cell_id} in {nb_path}")
    text = _once("".join(cells[0]["source"]), m, f"{nb_path} cell {cell_id}")
    cells[0]["source"] = text.splitlines(keepends=True)
    out[nb_path] = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    return out


def apply_mutation(copy: Path, m: dict) -> None:
    "Write the mutated module (and notebook cell) into the copy."
    for rel, text in mutated_files(copy, m).items():
        (copy / rel).write_text(text)


def copy_env(copy: Path) -> dict:
    "The environment of a run in the copy: the copy first on PYTHONPATH (inherited by kernels)."
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy), env.get("PYTHONPATH")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def check_import(copy: Path) -> None:
    "Fail loudly unless a subprocess in the copy imports the copy's spectra_ml."
    out = subprocess.run(
        [sys.executable, "-c", "import spectra_ml; print(spectra_ml.__file__)"],
        check=False,
        cwd=copy,
        env=copy_env(copy),
        capture_output=True,
        text=True,
    )
    got = Path(out.stdout.strip() or ".").resolve()
    if out.returncode or not got.is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy's spectra_ml is not imported: {got} ({out.stderr[-500:]})")


def node_of(case: ET.Element) -> str:
    "The pytest node id of a junit testcase (classname tests.test_x[.TestClass], name)."
    parts = case.get("classname", "").split(".")
    k = max((i for i, p in enumerate(parts) if p.startswith("test")), default=len(parts) - 1) + 1
    return "::".join(["/".join(parts[:k]) + ".py", *parts[k:], case.get("name", "")])


def read_junit(path: Path) -> dict:
    "node id -> (outcome, message) for every testcase of a junit XML file."
    if not path.exists():
        return {}
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            e = case.find(tag)
            if e is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                msg = (e.get("message") or e.text or "").strip().splitlines()
                msg = msg[0][:160] if msg else ""
                break
        out[node_of(case)] = (outcome, msg)
    return out


def run_pytest(copy: Path, tests: list, tag: str, exitfirst: bool, log_dir: Path | None) -> dict:
    "Run the node ids in the copy: `{'rc', 'cases', 'seconds', 'tail'}`."
    junit = copy / f"junit_{tag}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    cmd += ["-x"] * exitfirst + list(tests)
    t0 = time.time()
    r = subprocess.run(
        cmd, check=False, cwd=copy, env=copy_env(copy), capture_output=True, text=True
    )
    log = r.stdout + r.stderr
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{tag}.log").write_text(log)
    return {
        "rc": r.returncode,
        "cases": read_junit(junit),
        "seconds": time.time() - t0,
        "tail": "\n".join(log.strip().splitlines()[-3:]),
    }


def cases_of(cases: dict, node: str) -> dict:
    "The junit cases a node id names (itself, or its parametrisations)."
    return {k: v for k, v in cases.items() if k == node or k.startswith(node + "[")}


def baseline(tests: list, keep: bool, log_dir: Path | None) -> dict:
    "One run of every node id on an unmutated copy: node id -> passed (all its cases)."
    copy = scratch_copy()
    try:
        check_import(copy)
        r = run_pytest(copy, tests, "baseline", exitfirst=False, log_dir=log_dir)
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)
    print(f"baseline: {len(tests)} node ids in {r['seconds']:.0f} s, rc {r['rc']}", file=sys.stderr)
    ok = {}
    for node in tests:
        got = cases_of(r["cases"], node)
        ok[node] = bool(got) and all(o == "passed" for o, _ in got.values())
    return ok


def mutant(m: dict, keep: bool, log_dir: Path | None) -> dict:
    "Run one mutation's tests on a mutated copy: `{'caught', 'how', 'seconds'}`."
    copy = scratch_copy()
    try:
        apply_mutation(copy, m)
        check_import(copy)
        r = run_pytest(copy, m["tests"], m["name"], exitfirst=True, log_dir=log_dir)
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)
    bad = {k: v for k, v in r["cases"].items() if v[0] in ("failed", "error")}
    if bad:
        how = "; ".join(f"{k.split('::')[-1]} {o}: {msg}" for k, (o, msg) in bad.items())
    elif r["rc"]:
        how = f"pytest exit {r['rc']}: {r['tail']}"
    else:
        how = "all passed"
    # rc 1: tests failed, 2: a collection error; 3-5 (an internal or usage error): no catch
    caught = bool(bad) or r["rc"] in (1, 2)
    print(
        f"{m['name']}: {'caught' if caught else 'SURVIVED'} ({r['seconds']:.0f} s)", file=sys.stderr
    )
    return {"caught": caught, "how": how, "seconds": r["seconds"]}


def table(rows: list) -> str:
    "The Markdown table of the results, and how each mutant failed."
    short = lambda node: node.replace("tests/", "").replace(".py::", "::")
    lines = [
        "| mutation | file | what is broken | tests | baseline passes | mutant fails |",
        "|---|---|---|---|---|---|",
    ]
    for m, res, base in rows:
        tests = "<br>".join(f"`{short(t)}`" for t in m["tests"])
        b = "—" if base is None else ("yes" if all(base[t] for t in m["tests"]) else "**no**")
        if res is None:
            got = "not run (slow: `--include-slow`)" if m.get("slow") else "not run"
        else:
            got = "yes (caught)" if res["caught"] else "**no (survived)**"
        row = [f"`{m['name']}`", f"`{m['file']}`", m["why"], tests, b, got]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "How each mutant failed (first failing test: message; seconds of its pytest run):",
        "",
    ]
    for m, res, _ in rows:
        if res is not None:
            lines.append(f"- `{m['name']}` ({res['seconds']:.0f} s): {res['how']}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    ap.add_argument(
        "--baseline", action="store_true", help="also run the tests on the unmutated copy"
    )
    ap.add_argument("--include-slow", action="store_true", help="also run mutations marked slow")
    ap.add_argument("--out", type=Path, help="write the Markdown table here (default: print only)")
    ap.add_argument("--log-dir", type=Path, help="keep each pytest run's output here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--baseline-only", action="store_true", help="run the unmutated baseline alone")
    a = ap.parse_args(argv)
    names = [m["name"] for m in MUTATIONS]
    if len(set(names)) != len(names):
        raise SystemExit("mutation names are not unique")
    unknown = sorted(set(a.only or ()) - set(names))
    if unknown:
        raise SystemExit(f"unknown mutation(s) {unknown}; known: {names}")
    chosen = [m for m in MUTATIONS if not a.only or m["name"] in a.only]
    if a.list:
        for m in chosen:
            print(f"{m['name']}{' (slow)' if m.get('slow') else ''}: {m['why']}")
        return 0
    todo = [m for m in chosen if a.include_slow or not m.get("slow")]
    for m in todo:  # every mutation applies (exactly once) before anything runs
        mutated_files(ROOT, m)
    t0 = time.time()
    base = None
    if (a.baseline or a.baseline_only) and todo:
        tests = list(dict.fromkeys(t for m in todo for t in m["tests"]))
        base = baseline(tests, a.keep, a.log_dir)
    results = {} if a.baseline_only else {m["name"]: mutant(m, a.keep, a.log_dir) for m in todo}
    ran = {m["name"] for m in todo}
    rows = [(m, results.get(m["name"]), base if m["name"] in ran else None) for m in chosen]
    text = table(rows) + f"\nWall time {time.time() - t0:.0f} s.\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    survived = [n for n, r in results.items() if not r["caught"]]
    failed_base = [t for t, ok in (base or {}).items() if not ok]
    if survived:
        print(f"survived: {survived}", file=sys.stderr)
    if failed_base:
        print(f"baseline did not pass: {failed_base}", file=sys.stderr)
    return 1 if survived or failed_base else 0


if __name__ == "__main__":
    sys.exit(main())
