"""Mutation testing of the core with mutmut: how many small deliberate bugs do the relevant tests catch?

mutmut (3.x) copies the sources to ``mutants/``, rewrites every function there into its mutants, runs the tests
once to learn which tests reach which function, then runs, for each mutant, only those tests. This script does that
in a scratch copy of the repository (so no ``mutants/`` directory appears in the working tree and edits made while
it runs do not mix in), with the configuration below written into the copy's ``pyproject.toml`` as
``[tool.mutmut]``, and summarises the outcome into ``benchmarks/results/mutation.json``: the score and every
mutant that survived, with its diff.

    .venv/bin/python benchmarks/mutation.py                                   # every target (long: hours)
    .venv/bin/python benchmarks/mutation.py --only src/distill/losses/logits.py   # one file, its tests only

``make mutation`` runs the first form. The score is ``killed / (killed + survived)``: timeouts count as kills (the
mutant broke the code badly enough to hang it), mutants no selected test reaches are reported apart as
``no_tests`` (they are gaps in coverage, not in assertions).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What is mutated, and the tests that judge it. Tests that start a fresh interpreter (subprocess runs of the CLI,
# the kill/resume tests) are left out: mutmut's mutants live in the pytest process only.
TARGETS: dict[str, list[str]] = {
    "src/distill/losses/*": [
        "tests/test_losses.py",
        "tests/test_losses_logit_methods.py",
        "tests/test_losses_feature_methods.py",
        "tests/test_losses_stateful_methods.py",
        "tests/test_invariants_losses.py",
        "tests/test_multi_teacher.py",
        "tests/test_stateful_methods.py",
        "tests/test_distillers.py",
        "tests/test_losses_edges.py",
    ],
    "src/distill/engine/*": [
        "tests/test_trainer.py",
        "tests/test_invariants_engine.py",
        "tests/test_cache.py",
        "tests/test_tracking.py",
        "tests/test_faults.py",
    ],
    "src/distill/data/module.py": [
        "tests/test_data.py",
        "tests/test_invariants_data.py",
        "tests/test_trainer.py",
        "tests/test_few_labels.py",
        "tests/test_data_module_contract.py",
    ],
    "src/distill/report/*": [
        "tests/test_report_html.py",
        "tests/test_invariants_report.py",
        "tests/test_report_examples.py",
    ],
}
# A narrower test selection for single files (``--only``); other files fall back to their directory's entry.
FILE_TESTS: dict[str, list[str]] = {
    "src/distill/losses/logits.py": [
        "tests/test_losses.py",
        "tests/test_losses_logit_methods.py",
        "tests/test_invariants_losses.py",
        *(
            f"tests/test_multi_teacher.py::{t}"  # that file's loss-function tests (not its distiller tests)
            for t in (
                "test_weighted_sum_matches_numpy",
                "test_average_mode_matches_numpy",
                "test_one_teacher_or_identical_teachers_reduce_to_kd",
                "test_loss_refuses_inconsistent_arguments",
            )
        ),
    ],
}
# Surviving mutants that change nothing observable, with the reason (checked by hand): they count as survivors in
# the score but not as gaps. Names are mutmut's (module.function__mutmut_N).
EQUIVALENT: dict[str, str] = {
    "distill.report.metrics.x_classification_metrics__mutmut_12": "topk's default dim is the last one, which is "
    "dim 1 for the (N, K) logits it is given",
    "distill.losses.logits.x__binary_log_probs__mutmut_41": 'float("-INF") is float("-inf"): the same value',
    **{
        f"distill.losses.logits.x_multi_teacher_kd_loss__mutmut_{n}": "zip's strict flag: the lengths of teachers, "
        "weights and temperatures are checked equal a few lines above, so zip never sees unequal lengths"
        for n in (38, 42, 43)
    },
    "distill.losses.logits.x_multi_teacher_kd_loss__mutmut_5": "torch.stack(list(t)) of an (N, B, K) tensor is t "
    "itself: always stacking gives the same tensor",
    # F.normalize's own default is dim=1 (p=2, eps=1e-12): dropping the spelled-out dim=1 changes nothing
    **{
        f"distill.losses.{name}": "F.normalize's default dim is 1: dropping the explicit dim=1 changes nothing"
        for name in (
            "attention.x_attention_map__mutmut_23",
            "contrastive.x_memory_update__mutmut_4",
            "relational.x_cosine_conditional__mutmut_7",
            "relational.x_similarity_matrix__mutmut_7",
            "relational.x_taylor_rbf_correlation__mutmut_7",
            "variational.x_factor__mutmut_6",
        )
    },
    # match_size / pool_to_smaller / the resize calls only ever see (B, C, H, W) maps (attention_map and nst_loss
    # refuse anything else), and for a 4-D shape index 2 is index -2 and shape[2:] is shape[-2:]
    **{
        f"distill.losses.attention.{name}": "for a 4-D (B, C, H, W) map, shape[+2] is shape[-2] and shape[+2:] is "
        "shape[-2:]; every caller passes 4-D maps (attention_map and nst_loss refuse others)"
        for name in (
            "x_match_size__mutmut_2",
            "x_match_size__mutmut_7",
            "x_pool_to_smaller__mutmut_6",
            "x_pool_to_smaller__mutmut_8",
            "x_pool_to_smaller__mutmut_22",
            "x_nst_loss__mutmut_30",
        )
    },
    # skipping the "already that size" shortcut: adaptive average pooling to the same size averages one element
    # per output, which is the element itself, bit for bit (values and gradients)
    **{
        f"distill.losses.attention.{name}": "the same-size shortcut is skipped, but adaptive_avg_pool2d to the map's "
        "own size averages a single element per output: the identical values and gradients"
        for name in ("x_match_size__mutmut_3", "x_pool_to_smaller__mutmut_19", "x_pool_to_smaller__mutmut_23")
    },
    "distill.losses.attention.x_match_size__mutmut_22": "F.interpolate's align_corners=None means False for "
    "bilinear (no warning in torch 2.x): the same resampling",
    "distill.losses.attention.x_match_size__mutmut_26": "F.interpolate's default align_corners=None means False for "
    "bilinear (no warning in torch 2.x): the same resampling",
    **{
        f"distill.losses.contrastive.x_bank_scores__mutmut_{n}": "the condition only picks one of two ways to compute "
        "the same scores (one matrix product then gather, or gather then bmm); both give exp(<a, bank[idx]>/T), "
        "equal up to float rounding of the same dot products"
        for n in (1, 2, 3)
    },
    "distill.losses.relational.x__normalised_distances__mutmut_10": "max(2, b(b-1)) differs from max(1, b(b-1)) "
    "only for b = 1 (or 0), where the only distance is the zero diagonal: 0 / anything is 0 either way",
    **{
        f"distill.losses.relational.x_cosine_conditional__mutmut_{n}": "k = (cos + 1) times any positive constant "
        "is divided by its own row sum on the next line: the constant cancels (x2 exactly, /3 up to rounding)"
        for n in (13, 16)
    },
    **{
        f"distill.losses.relational.x_{fn}__mutmut_18": "F.smooth_l1_loss's default beta is 1.0: dropping the "
        "explicit beta=1.0 changes nothing"
        for fn in ("rkd_angle_loss", "rkd_distance_loss")
    },
    **{
        f"distill.losses.review.x_hcl_sum__mutmut_{n}": "zip's strict flag: the stage counts are checked equal on "
        "the line above, so zip never sees unequal lengths"
        for n in (12, 15, 16)
    },
    "distill.losses.variational.x_vid_nll__mutmut_13": "a (C,) variance viewed as (C, 1, ..., 1) instead of "
    "(1, C, 1, ..., 1) broadcasts identically against (B, C, ...): leading 1s are implied by broadcasting",
    "distill.losses.variational.x_vid_nll__mutmut_8": "for a 2-D (B, C) target the extra branch views a (C,) "
    "variance as (1, C), which broadcasts exactly like (C,)",
    # src/distill/data/module.py (tests/test_data_module_contract.py kills the rest)
    **{
        f"distill.data.module.xǁDataModuleǁ__init____mutmut_{n}": "torch.ones(n) without dtype=torch.bool is a "
        "float 1/0 mask: keep[val_idx] = False and keep.nonzero() give exactly the same training positions"
        for n in (63, 65)
    },
    **{
        f"distill.data.module.xǁDataModuleǁ__init____mutmut_{n}": "torch.tensor of a tuple of Python floats is "
        "float32 (the default dtype) without dtype=torch.float32, and an int mean/std is promoted to float32 by "
        "normalize's float image: the same batches"
        for n in (90, 92, 95, 97)
    },
    "distill.data.module.xǁDataModuleǁ__init____mutmut_111": "masking at labeled_fraction == 1.0 too is a no-op: "
    "labelled_mask(y, 1.0, seed) keeps max(1, round(1.0 * n_c)) = every sample of every class",
    "distill.data.module.xǁDataModuleǁ__init____mutmut_112": "for every valid labeled_fraction in (0, 1] the branch "
    "is taken exactly as before (1.0 masks nothing, see mutmut_111); only out-of-range fractions in (1, 2) differ",
    **{
        f"distill.data.module.xǁDataModuleǁtrain_batches__mutmut_{n}": "non_blocking only changes whether a "
        "host-to-device copy may overlap; the copied values and device are the same once used"
        for n in (50, 51, 69, 74, 106, 107)
    },
    "distill.data.module.xǁDataModuleǁtrain_batches__mutmut_13": "with world_size == 1 (rank 0, shard() allows "
    "no other) the strided slice order[0 : n : 1] is the whole order unchanged",
    **{
        f"distill.data.module.xǁDataModuleǁtrain_batches__mutmut_{n}": "views drawn when a cache is given are "
        "never read (the cache branch comes first) and are drawn after the order; without augmentation "
        "sample_views draws nothing and its all-zero views make apply_views the identity"
        for n in (25, 32)
    },
    **{
        f"distill.data.module.x_load_datamodule__mutmut_{n}": "DataModule reads a float val_size >= 1 as the count "
        "int(val_size), so passing the float on (e.g. 1.0 or 12.0) instead of int() of it gives the same split"
        for n in (19, 20, 21)
    },
    **{
        f"distill.data.module.x_load_datamodule__mutmut_{n}": "DataConfig refuses labeled_fraction > 1, and passing "
        "labeled_fraction=1.0 explicitly equals DataModule's default of 1.0"
        for n in (30, 31)
    },
}
# Survivors of the last recorded run that a test added since kills (checked by applying the mutant by hand); they
# stay survivors in the score until the target is run again.
KILLED_SINCE: dict[str, str] = {
    **{
        f"distill.report.metrics.x_expected_calibration_error__mutmut_{n}": (
            "test_ece_bins_are_left_open_right_closed_on_0_1_by_hand"
        )
        for n in (20, 28, 29)
    },
    "distill.data.module.x_load_datamodule__mutmut_3": "test_load_datamodule_reads_from_the_configured_root",
    "distill.data.module.x_load_datamodule__mutmut_6": "test_load_datamodule_reads_from_the_configured_root",
    "distill.data.module.x_load_datamodule__mutmut_7": (
        "test_load_datamodule_passes_root_download_and_options_to_the_loader"
    ),
    "distill.data.module.xǁDataModuleǁlabeled_only__mutmut_8": "test_labeled_only_without_any_label_is_refused",
}
COPY = ["src", "tests", "configs", "pyproject.toml"]
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"


def tests_for(patterns: list[str]) -> list[str]:
    tests: list[str] = []
    for p in patterns:
        chosen = (
            FILE_TESTS.get(p) or TARGETS.get(p) or next((t for pat, t in TARGETS.items() if Path(p).match(pat)), None)
        )
        if chosen is None:
            raise SystemExit(f"no tests are configured for {p}; add it to TARGETS or FILE_TESTS in {__file__}")
        tests += [t for t in chosen if t not in tests]
    return tests


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def mutmut_config(only: list[str], tests: list[str], timeout_multiplier: float) -> str:
    return "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["src/"]',
            f"only_mutate = {toml_list(only)}",
            f"pytest_add_cli_args_test_selection = {toml_list(tests)}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow and not gpu"]',
            'also_copy = ["configs/"]',
            'process_isolation = "forkserver"',  # torch is not fork-safe once it has run
            f"timeout_multiplier = {timeout_multiplier}",
            "",
        ]
    )


def prepare(work: Path, only: list[str], tests: list[str], timeout_multiplier: float) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "mutants")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=ignore)
        else:
            shutil.copy2(src, work / name)
    pyproject = work / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", pyproject.read_text())  # ours replaces any existing one
    pyproject.write_text(text + mutmut_config(only, tests, timeout_multiplier))


def mutmut(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)  # the mutated copy must be what the tests import
    exe = Path(sys.executable).with_name("mutmut")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mutmut"]
    return subprocess.run([*cmd, *args], cwd=work, env=env, text=True, capture_output=True, check=check)


def summarise(work: Path, only: list[str], tests: list[str], seconds: float, run_tail: str) -> dict:
    listing = mutmut(work, "results", "--all", "true").stdout
    status: dict[str, str] = {}
    for line in listing.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m:
            status[m.group(1)] = m.group(2).strip()
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    survived = counts.get("survived", 0)
    survivors = []
    for name, s in sorted(status.items()):
        if s == "survived":
            diff = mutmut(work, "show", name, check=False).stdout
            survivors.append({"mutant": name, "diff": "\n".join(diff.splitlines()[1:]).strip()})
    return {
        "tool": f"mutmut {mutmut_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "mutated": only,
        "tests": tests,
        "score": round(killed / (killed + survived), 4) if killed + survived else None,
        "counts": dict(sorted(counts.items())),
        "total": len(status),
        "seconds": round(seconds, 1),
        "survivors": survivors,
        "no_tests": sorted(n for n, s in status.items() if s == "no tests"),
        "run_log_tail": run_tail[-3000:] if not status or "not checked" in counts else "",  # why it did not run
    }


def mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def load_results(path: Path) -> dict:
    """The results file as ``{"parts": {target: summary}}`` (an older single-run file becomes one part)."""
    if not path.exists():
        return {"parts": {}}
    data = json.loads(path.read_text())
    if "parts" in data:
        return data
    return {"parts": {",".join(data.get("mutated", [])): data}} if data.get("mutated") else {"parts": {}}


def covered(target: str, parts: dict) -> bool:
    """Whether a target has been run: as a whole, or file by file (every module it matches but __init__)."""
    if target in parts:
        return True
    run = {f for key in parts for f in key.split(",")}
    files = [
        str(f.relative_to(ROOT)) for f in sorted(ROOT.glob(target)) if f.suffix == ".py" and f.name != "__init__.py"
    ]
    return bool(files) and all(f in run for f in files)


def aggregate(results: dict) -> dict:
    """The overall score over the configured targets (``TARGETS``) that have been run; single-file runs under
    ``--only`` are kept as parts but counted only when their directory's target has not been run."""
    parts = results["parts"]
    counted = [k for k in TARGETS if k in parts]
    counted += [k for k in parts if k not in TARGETS and not any(Path(k).match(t) and t in parts for t in TARGETS)]
    counts: dict[str, int] = {}
    for k in counted:
        for s, n in parts[k]["counts"].items():
            counts[s] = counts.get(s, 0) + n
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    survived = counts.get("survived", 0)
    survivors = [{**s, "target": k} for k in counted for s in parts[k]["survivors"]]
    for s in survivors:
        s["equivalent"] = EQUIVALENT.get(s["mutant"])
        s["killed_since_by"] = KILLED_SINCE.get(s["mutant"])
    return {
        "tool": f"mutmut {mutmut_version()}",
        "targets_run": counted,
        "targets_missing": [k for k in TARGETS if not covered(k, parts)],
        "score": round(killed / (killed + survived), 4) if killed + survived else None,
        "counts": dict(sorted(counts.items())),
        "total": sum(counts.values()),
        "seconds": round(sum(parts[k]["seconds"] for k in counted), 1),
        "survivors_unexplained": sum(1 for s in survivors if not (s["equivalent"] or s["killed_since_by"])),
        "survivors": survivors,
        "parts": parts,
    }


def run_part(only: list[str], args: argparse.Namespace) -> dict:
    tests = tests_for(only)
    work = args.keep or Path(tempfile.mkdtemp(prefix="distill-mutation-"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    try:
        prepare(work, only, tests, args.timeout_multiplier)
        t0 = time.perf_counter()
        run = mutmut(work, "run", "--max-children", str(args.max_children), check=False)
        seconds = time.perf_counter() - t0
        summary = summarise(work, only, tests, seconds, run.stdout + run.stderr)
        summary["exit_code"] = run.returncode
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    c = summary["counts"]
    print(f"{','.join(only)}: score {summary['score']}: {c} over {summary['total']} mutants in {summary['seconds']} s")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="file(s) or glob(s) under src/ to mutate (default: every target)")
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1)")
    ap.add_argument("--timeout-multiplier", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--force", action="store_true", help="run again the targets already in the results file")
    ap.add_argument("--summarise", action="store_true", help="run nothing; rewrite the results from its parts")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    results = load_results(args.out)
    # Each target is its own mutmut run, written as soon as it ends: a long run stopped part-way keeps what it did
    # and the next invocation continues with the targets still missing.
    jobs = [args.only] if args.only else [[t] for t in TARGETS]
    for only in [] if args.summarise else jobs:
        key = ",".join(only)
        if covered(key, results["parts"]) and not (args.force or args.only):  # as a whole or file by file
            print(f"{key}: already in {args.out} (--force runs it again)")
            continue
        results["parts"][key] = run_part(only, args)
        write_results(args.out, results)
    out = write_results(args.out, results)
    for s in out["survivors"]:
        print(f"  survived: {s['mutant']}" + (" (equivalent)" if s["equivalent"] else ""))
    print(f"score {out['score']} over {out['targets_run']}; missing {out['targets_missing']}; wrote {args.out}")
    return 0 if out["total"] else 1


def write_results(path: Path, results: dict) -> dict:
    out = aggregate(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
