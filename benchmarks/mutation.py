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
    ],
    "src/distill/report/*": [
        "tests/test_report_html.py",
        "tests/test_invariants_report.py",
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
        "run_log_tail": run_tail[-2000:] if not status else "",
    }


def mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="file(s) or glob(s) under src/ to mutate (default: every target)")
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1)")
    ap.add_argument("--timeout-multiplier", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    only = args.only or list(TARGETS)
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    c = summary["counts"]
    print(f"mutation score {summary['score']}: {c} over {summary['total']} mutants in {summary['seconds']} s")
    for s in summary["survivors"]:
        print(f"  survived: {s['mutant']}")
    print(f"wrote {args.out}")
    return 0 if summary["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
