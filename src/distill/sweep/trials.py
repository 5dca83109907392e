"""One trial of a sweep: the shared context (data, teacher, budgets) and the Optuna objective that trains and
scores a student (part of :mod:`distill.sweep`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill import api
from distill import config as C
from distill.artifacts import read_model_spec, write_json
from distill.engine.tracking import extra_callbacks
from distill.models.zoo import create_model
from distill.report.bench import count_params, latency_ms, size_on_disk
from distill.report.html import save_predictions
from distill.report.metrics import classification_metrics, predict
from distill.sweep.space import PruningCallback, Space, _optuna
from distill.trust import verify_model

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
