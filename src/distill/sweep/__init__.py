"""The size–accuracy search: an Optuna study over the distillation temperature, α, the learning rate and the
student's width/depth within its zoo family.

* ``objective="acc"``: maximise validation accuracy, optionally under a parameter or CPU-latency budget (a student
  over budget is pruned before it trains); hopeless trials are pruned after an epoch by a median rule on the
  per-epoch validation accuracy, reported by a trainer callback.
* ``objective="acc_latency"`` / ``"acc_params"``: accuracy against batch-1 CPU latency / parameters; the result is
  the Pareto front.
* ``auto_student=POINTS``: the smallest student whose validation accuracy is within POINTS percentage points of the
  teacher's (searched on accuracy vs parameters unless an objective is given); copied to ``<out>/auto_student``.

The study lives in SQLite (``<out>/study.db`` by default), so running the same command again resumes it up to
``trials`` finished trials. Each trial is a model directory ``<out>/trials/NNNN`` made with the pieces of
:func:`distill.api.run`; ``<out>/sweep.json`` sums it up and feeds the report's Pareto plots. Trials are scored on
validation data; test accuracy is recorded beside, never optimised.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from distill import api
from distill import config as C
from distill.artifacts import write_json
from distill.errors import ConfigError, DistillError
from distill.report.html import write_html
from distill.sweep.space import OBJECTIVES, PruningCallback, Space, _optuna, architecture_space, method_space
from distill.sweep.summary import _copy_model, _trial_line, choose_auto_student, summarize
from distill.sweep.trials import _Context, _fail_stale, _finished, _objective, check_saved_teacher
from distill.workflow import rundir

# the pieces live in distill.sweep.space, .trials and .summary; every name stays importable from here
__all__ = [
    "OBJECTIVES",
    "PruningCallback",
    "Space",
    "architecture_space",
    "check_saved_teacher",
    "choose_auto_student",
    "method_space",
    "summarize",
    "sweep",
]


def sweep(
    recipe: C.Config | str | Path,
    out: str | Path | None = None,
    *,
    trials: int = 10,
    objective: str | None = None,
    budget_params: int | None = None,
    budget_latency_ms: float | None = None,
    storage: str | None = None,
    auto_student: float | None = None,
    method: str = "kd",
    study_name: str = "distill-sweep",
    overrides: tuple[str, ...] | list[str] = (),
    html: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or resume) a sweep until ``trials`` trials have finished; returns what ``sweep.json`` holds."""
    optuna = _optuna()
    objective = objective or ("acc_params" if auto_student is not None else "acc")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")
    if budget_params is not None and budget_latency_ms is not None:
        raise ConfigError("give a parameter budget or a latency budget, not both")
    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    name = Path(recipe).stem if isinstance(recipe, (str, Path)) else "recipe"
    cfg = api.as_config(recipe, [*overrides, "methods=[]"])
    check_saved_teacher(cfg)  # an unsigned or tampered teacher is refused before anything is written
    out = Path(out) if out else Path("runs") / f"sweep-{name}"
    # a sweep always resumes its own directory (there is no --overwrite): a new one, or one a sweep made
    rundir.prepare(out, kind="sweep", resume=True, resumable=_is_sweep_dir)
    saved = out / "config.yaml"
    if saved.exists() and saved.read_text() != C.dump_yaml(cfg):
        raise ConfigError(f"{out} holds a sweep of a different recipe; use the same recipe to resume, or another --out")
    saved.write_text(C.dump_yaml(cfg))
    arch, arch_what = architecture_space(cfg.student.model, cfg.student.kwargs)
    hyper, hyper_what = method_space(method, cfg.train.lr)

    storage = storage or f"sqlite:///{(out / 'study.db').resolve().as_posix()}"
    study = optuna.create_study(
        storage=storage, study_name=study_name, directions=OBJECTIVES[objective], load_if_exists=True
    )
    if [d.name.lower() for d in study.directions] != OBJECTIVES[objective]:
        raise ConfigError(f"study {study_name!r} in {storage} was made for another objective; use another --out")
    _fail_stale(study)
    done = _finished(study)
    study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + done, n_startup_trials=5)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    remaining = max(0, trials - done)

    print(
        f"sweep {out}: {done} finished, {remaining} to run; searching {arch_what}; {method} {hyper_what}",
        file=sys.stderr,
    )
    repeats = max(5, min(cfg.bench.repeats, 20))
    ctx = _Context(cfg, out, method, repeats)
    if remaining:
        run_trial = _objective(ctx, arch, hyper, objective, budget_params, budget_latency_ms)
        disable = (not sys.stderr.isatty()) if progress is None else not progress
        bar = tqdm(total=trials, initial=done, desc="sweep", unit="trial", disable=disable, dynamic_ncols=True)

        def after(study: Any, t: Any) -> None:
            bar.update(1)
            line = _trial_line(t)
            (bar.write if not bar.disable else lambda m: print(m, file=sys.stderr))(line)

        try:
            study.optimize(run_trial, n_trials=remaining, callbacks=[after], catch=(DistillError,))
        finally:
            bar.close()
    result = summarize(study, ctx, objective, storage, study_name, budget_params, budget_latency_ms, auto_student)
    result["space"] = {"architecture": arch_what, "method": method, "hyper": hyper_what}
    write_json(out / "sweep.json", result)
    if auto_student is not None and result["auto_student"].get("trial") is not None:
        _copy_model(Path(result["auto_student"]["dir"]), out / "auto_student")
    if html:
        write_html([out], out / "report.html")
    result["out"] = str(out)
    return result


_SWEEP_NAMES = {"config.yaml", "study.db", "sweep.json", "trials", "teacher", "teacher_cache", "report.html",
                "auto_student", "mlflow.db", "mlartifacts"}  # fmt: skip


def _is_sweep_dir(out: Path) -> bool:
    """A directory a sweep wrote: its recipe, and nothing a sweep does not write (a run's report.json ...)."""
    names = {p.name for p in out.iterdir()}
    return "config.yaml" in names and all(
        n in _SWEEP_NAMES or n.startswith((".", "study.db", "mlflow.db")) for n in names
    )
