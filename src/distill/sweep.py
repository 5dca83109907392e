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

import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from distill import api
from distill import config as C
from distill.artifacts import read_model_spec, write_json
from distill.distillers import DISTILLERS
from distill.distillers.base import method_temperature
from distill.engine.callbacks import Callback
from distill.engine.tracking import extra_callbacks
from distill.errors import ConfigError, DistillError
from distill.models.zoo import create_model, model_names
from distill.report.bench import count_params, latency_ms, size_on_disk
from distill.report.html import save_predictions, write_html
from distill.report.metrics import classification_metrics, predict
from distill.trust import verify_model
from distill.workflow import rundir

OBJECTIVES = {"acc": ["maximize"], "acc_latency": ["maximize", "minimize"], "acc_params": ["maximize", "minimize"]}
Space = Callable[[Any], tuple[str, dict[str, Any]]]  # trial -> (model name, kwargs)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise ConfigError("distill sweep needs optuna: pip install 'optuna>=3.5'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- what is searched ----------------------------------------------------------------------------------------------


def architecture_space(model: str, kwargs: dict[str, Any]) -> tuple[Space, str]:
    """A sampler of student architectures in ``model``'s zoo family, and a line saying what it searches."""

    def cnn(t: Any) -> tuple[str, dict[str, Any]]:
        return "cnn", {
            **kwargs,
            "width": t.suggest_int("width", 2, 32, log=True),
            "blocks": t.suggest_int("blocks", 1, 3),
        }

    def mlp(t: Any) -> tuple[str, dict[str, Any]]:
        width, layers = t.suggest_int("hidden", 16, 512, log=True), t.suggest_int("layers", 1, 3)
        return "mlp", {**kwargs, "hidden": [width] * layers}

    def wrn(t: Any) -> tuple[str, dict[str, Any]]:
        depth = t.suggest_categorical("depth", [10, 16, 22, 28])
        return "wrn", {**kwargs, "depth": depth, "widen_factor": t.suggest_int("widen_factor", 1, 4)}

    spaces = {
        "cnn": (cnn, "cnn width 2–32, blocks 1–3"),
        "mlp": (mlp, "mlp hidden width 16–512, 1–3 layers"),
        "wrn": (wrn, "wrn depth 10–28, widen factor 1–4"),
    }
    if model in spaces:
        return spaces[model]
    for pattern in (r"resnet\d+", r"resnet\d+x4", r"wrn_\d+_\d+", r"vgg\d+"):
        if re.fullmatch(pattern, model):
            family = sorted((n for n in model_names() if re.fullmatch(pattern, n) and n != "resnet110"), key=_depth_key)
            return _choice(family, kwargs), f"one of {', '.join(family)}"
    return _choice([model], kwargs), f"{model} (no size knob: hyper-parameters only)"


def _choice(family: list[str], kwargs: dict[str, Any]) -> Space:
    if len(family) == 1:
        return lambda t: (family[0], dict(kwargs))
    return lambda t: (t.suggest_categorical("model", family), dict(kwargs))


def _depth_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def method_space(method: str, lr: float) -> tuple[Callable[[Any], tuple[dict[str, Any], float]], str]:
    """A sampler of the method's temperature and α (when it has them) and the learning rate around ``lr``."""
    import inspect

    own = inspect.signature(DISTILLERS.get(method).__init__).parameters
    has_t = method_temperature(method, {}) is not None
    has_alpha = "alpha" in own

    def sample(t: Any) -> tuple[dict[str, Any], float]:
        params: dict[str, Any] = {}
        if has_t:
            params["temperature"] = t.suggest_float("temperature", 1.0, 10.0)
        if has_alpha:
            params["alpha"] = t.suggest_float("alpha", 0.1, 1.0)
        return params, t.suggest_float("lr", lr / 10, lr * 4, log=True)

    what = ", ".join(
        [*(["T 1–10"] if has_t else []), *(["α 0.1–1"] if has_alpha else []), f"lr {lr / 10:g}–{lr * 4:g}"]
    )
    return sample, what


# -- pruning -------------------------------------------------------------------------------------------------------


class PruningCallback(Callback):
    """Reports each epoch's validation accuracy to the Optuna trial; stops a hopeless one (``TrialPruned``)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        acc = record.get("val", record.get("test", {})).get("acc")
        if acc is None:
            return
        self.trial.report(acc, record["epoch"])
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"validation accuracy {acc:.4f} at epoch {record['epoch']} is below the median")


# -- the sweep -----------------------------------------------------------------------------------------------------


def check_saved_teacher(cfg: C.Config) -> None:
    """Refuse a saved teacher (or ensemble member) that is missing, has a bad ``model.json`` or, when
    ``teacher.public_key`` is set, lacks a valid signature by that key — in seconds, before the sweep directory
    is touched. Loading it later checks again (the files could change in between)."""
    for d in cfg.teacher.ensemble or ([cfg.teacher.checkpoint] if cfg.teacher.checkpoint else []):
        if cfg.teacher.public_key is not None:
            verify_model(Path(d), cfg.teacher.public_key)
        read_model_spec(d)


class _Context:
    """What every trial shares: the recipe, data, teacher and its predictions."""

    def __init__(self, cfg: C.Config, out: Path, method: str, repeats: int) -> None:
        self.cfg, self.out, self.method, self.repeats = cfg, out, method, repeats
        api.seed_everything(cfg.seed, cfg.deterministic)
        self.data, self.dm = api.load_data(cfg)
        self.device = api.resolve_device(cfg.device)
        self.teacher, self.teacher_row = self._teacher()
        self.shape = (self.data.in_channels, *self.data.image_size)

    def _teacher(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The recipe's teacher as :func:`distill.api.run` gets it: an ensemble, a saved model or trained here.

        A saved teacher (or ensemble member) must carry a valid signature by ``teacher.public_key`` when it is set.
        """
        cfg, tdir = self.cfg, self.out / "teacher"
        weights = [Path(m) / "model.safetensors" for m in cfg.teacher.ensemble] or [tdir / "model.safetensors"]
        if cfg.teacher.ensemble:
            teacher = api.load_ensemble(cfg.teacher.ensemble, self.data, cfg.teacher.public_key)
            write_json(tdir / "ensemble.json", {"method": "ensemble", "members": list(cfg.teacher.ensemble)})
        elif cfg.teacher.checkpoint:
            teacher, spec = api.load_teacher(cfg.teacher.checkpoint, self.data, cfg.teacher.public_key)
            if not (tdir / "done.json").exists():
                api.finish_stage(teacher, spec, tdir, {"method": "loaded", "source": cfg.teacher.checkpoint})
        else:
            torch.manual_seed(cfg.seed)
            teacher = api.build_model(cfg.teacher, self.data)
            teacher, info = api.fit(
                cfg, self.dm, self.data, teacher, None, "scratch", {}, cfg.teacher.train, tdir, "teacher", True
            )
            if not (tdir / "model.json").exists():
                api.finish_stage(teacher, api.model_spec(cfg.teacher, self.data), tdir, info)
        teacher = teacher.to(self.device).eval()
        self.t_test, self.y_test = predict(teacher, self.dm.eval_batches("test", self.device), self.device)
        save_predictions(tdir, self.t_test, self.y_test)
        val_split = "val" if len(self.dm.split("val")[0]) else "test"
        t_val, y_val = predict(teacher, self.dm.eval_batches(val_split, self.device), self.device)
        row = {
            "name": "teacher",
            "model": "ensemble" if cfg.teacher.ensemble else cfg.teacher.model,
            **({"members": list(cfg.teacher.ensemble)} if cfg.teacher.ensemble else {}),
            "accuracy": classification_metrics(self.t_test, self.y_test)["acc"],
            "val_acc": float((t_val.argmax(1) == y_val).float().mean()),
            "params": count_params(teacher),
            "size_bytes": sum(size_on_disk(w) for w in weights),
            "latency_ms_b1": latency_ms(teacher, (self.data.in_channels, *self.data.image_size), 1, self.repeats),
        }
        return teacher, row


def _last_val_acc(model_dir: Path, fallback: float) -> float:
    lines = [ln for ln in (model_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    if not lines:
        return fallback
    rec = json.loads(lines[-1])
    return float(rec.get("val", rec.get("test", {})).get("acc", fallback))


def _objective(
    ctx: _Context,
    arch: Space,
    hyper: Callable[[Any], tuple[dict[str, Any], float]],
    objective: str,
    budget_params: int | None,
    budget_latency_ms: float | None,
) -> Callable[[Any], Any]:
    optuna = _optuna()
    cfg = ctx.cfg

    def run_trial(trial: Any) -> Any:
        model, kwargs = arch(trial)
        mparams, lr = hyper(trial)
        torch.manual_seed(cfg.seed + 1)  # every student starts from the same initial weights for its shape
        student = create_model(model, num_classes=ctx.data.num_classes, in_channels=ctx.data.in_channels, **kwargs)
        n_params = count_params(student)
        lat = latency_ms(student, ctx.shape, 1, repeats=ctx.repeats)  # the weights do not change the latency
        trial.set_user_attr("model", model)
        trial.set_user_attr("kwargs", kwargs)
        trial.set_user_attr("method_params", mparams)
        trial.set_user_attr("params_count", n_params)
        trial.set_user_attr("latency_ms_b1", lat)
        if budget_params is not None and n_params > budget_params:
            raise optuna.TrialPruned(f"{n_params:,} parameters exceed the budget of {budget_params:,}")
        if budget_latency_ms is not None and lat > budget_latency_ms:
            raise optuna.TrialPruned(f"{lat:.3f} ms exceeds the latency budget of {budget_latency_ms:g} ms")
        tdir = ctx.out / "trials" / f"{trial.number:04d}"
        if tdir.exists():
            shutil.rmtree(tdir)
        tcfg = C.from_dict(
            C.Config,
            {
                **C.to_dict(cfg),
                "student": {"model": model, "kwargs": kwargs},
                "train": {**C.to_dict(cfg)["train"], "lr": lr},
                "methods": [{"name": ctx.method, "params": mparams}],
            },
        )
        trial.set_user_attr("dir", str(tdir))
        prune = (lambda d, label: PruningCallback(trial)) if objective == "acc" else (lambda d, label: None)
        with extra_callbacks(prune):
            student, info = api.fit(
                tcfg,
                ctx.dm,
                ctx.data,
                student,
                ctx.teacher,
                ctx.method,
                mparams,
                tcfg.train,
                tdir,
                f"trial {trial.number}",
                False,
            )
        spec = api.model_spec(tcfg.student, ctx.data, method=ctx.method, params=mparams, lr=lr, trial=trial.number)
        api.finish_stage(student, spec, tdir, info)
        logits, _ = predict(student, ctx.dm.eval_batches("test", ctx.device), ctx.device)
        save_predictions(tdir, logits, ctx.y_test)
        m = classification_metrics(logits, ctx.y_test, ctx.t_test)
        val = _last_val_acc(tdir, info["best_val_acc"]) if cfg.select == "last" else info["best_val_acc"]
        for k, v in (
            ("val_acc", val),
            ("accuracy", m["acc"]),
            ("agreement", m["agreement"]),
            ("ece", m["ece"]),
            ("size_bytes", size_on_disk(tdir / "model.safetensors")),
            ("epochs", info["epochs"]),
        ):
            trial.set_user_attr(k, v)
        if objective == "acc":
            return val
        return val, (lat if objective == "acc_latency" else float(n_params))

    return run_trial


def _fail_stale(study: Any) -> None:
    """Trials left RUNNING by an interrupted sweep are marked failed (one process per study)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


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


def _trial_line(t: Any) -> str:
    a = t.user_attrs
    cost = f"{a.get('params_count', 0):,} params, {a.get('latency_ms_b1', float('nan')):.3f} ms"
    state = t.state.name.lower()
    if state == "complete":
        return (
            f"trial {t.number}: val acc {a.get('val_acc', float('nan')):.4f}, test acc {a.get('accuracy'):.4f}; {cost}"
        )
    return f"trial {t.number}: {state}; {cost}"


def _copy_model(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "model.safetensors"):
        shutil.copy2(src / name, dst / name)


def summarize(
    study: Any,
    ctx: _Context,
    objective: str,
    storage: str,
    study_name: str,
    budget_params: int | None,
    budget_latency_ms: float | None,
    auto_student: float | None,
) -> dict[str, Any]:
    """What ``sweep.json`` holds: the teacher, every trial, the best trial(s) and the auto-student choice."""
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "values": list(t.values) if t.values else None,
                "val_acc": a.get("val_acc"),
                "accuracy": a.get("accuracy"),
                "agreement": a.get("agreement"),
                "ece": a.get("ece"),
                "params_count": a.get("params_count"),
                "size_bytes": a.get("size_bytes"),
                "latency_ms_b1": a.get("latency_ms_b1"),
                "model": a.get("model"),
                "kwargs": a.get("kwargs"),
                "method_params": a.get("method_params"),
                "dir": a.get("dir"),
            }
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        best = []
    elif len(study.directions) > 1:
        best = sorted(t.number for t in study.best_trials)
    else:
        best = [study.best_trial.number]
    budget = {"params": budget_params} if budget_params is not None else None
    if budget_latency_ms is not None:
        budget = {"latency_ms_b1": budget_latency_ms}
    result = {
        "study": study_name,
        "storage": storage,
        "objective": objective,
        "directions": [d.name.lower() for d in study.directions],
        "budget": budget,
        "dataset": {
            "name": ctx.data.name,
            "train": len(ctx.data.x_train),
            "test": len(ctx.data.x_test),
            "classes": ctx.data.num_classes,
        },
        "teacher": ctx.teacher_row,
        "trials": trials,
        "best": best,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if auto_student is not None:
        result["auto_student"] = choose_auto_student(trials, ctx.teacher_row["val_acc"], auto_student)
    return result


def choose_auto_student(trials: list[dict[str, Any]], teacher_val_acc: float, points: float) -> dict[str, Any]:
    """The finished trial with the fewest parameters whose validation accuracy is at least the teacher's minus
    ``points`` percentage points (ties: the more accurate); ``trial`` is None when no trial qualifies."""
    threshold = teacher_val_acc - points / 100
    ok = [t for t in trials if t["state"] == "COMPLETE" and t.get("val_acc") is not None and t["val_acc"] >= threshold]
    out: dict[str, Any] = {"points": points, "teacher_val_acc": teacher_val_acc, "threshold": threshold, "trial": None}
    if ok:
        t = min(ok, key=lambda t: (t["params_count"], -t["val_acc"]))
        out.update(
            {
                "trial": t["number"],
                "params_count": t["params_count"],
                "val_acc": t["val_acc"],
                "accuracy": t["accuracy"],
                "model": t["model"],
                "kwargs": t["kwargs"],
                "method_params": t["method_params"],
                "lr": t["params"].get("lr"),
                "dir": t["dir"],
            }
        )
    return out
