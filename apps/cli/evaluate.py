"""``tumorboard evaluate`` (test-split metrics, baselines, ablations, figures) and ``tumorboard predict``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from apps.cli.common import Command, console, err_console, fail

RunArgument = Annotated[Path, typer.Argument(metavar="RUN", help="A run directory written by `tumorboard train`.")]
LakeOption = Annotated[Path | None, typer.Option(
    "--lake", help="The lake (default: the lake the run was trained on).")]
HEADLINE = {"diagnosis": "auroc", "survival": "c_index_harrell",
            "response": "auroc"}


def register(app: typer.Typer) -> None:
    app.command("evaluate", cls=Command)(evaluate)
    app.command("predict", cls=Command)(predict)


def _errors() -> tuple[type[Exception], ...]:
    from fusion.cohort import CohortError
    from fusion.config import ConfigError
    from fusion.run import RunError
    from ingest.lake import LakeError

    return RunError, CohortError, ConfigError, LakeError


def evaluate(
    run: RunArgument,
    lake: LakeOption = None,
    retrain: Annotated[bool, typer.Option("--retrain/--no-retrain", help="Train one model per single "
                                          "modality for the only_<m> ablations (slow). Saved ones are reused; "
                                          "--no-retrain scores only those.")]
    = True,
    n_boot: Annotated[int | None, typer.Option("--n-boot", min=0, help="Bootstrap resamples (default: the "
                                               "run's eval.n_boot).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write metrics.json and the plots here instead of "
                                             "into RUN (e.g. an external validation's, to keep the run's own).")]
    = None,
) -> None:
    """Score a run on its test split: writes RUN/metrics.json and plots (the model next to its baselines and
    ablations, calibration, Kaplan-Meier, ROC).

    For a --cv run, every fold is scored and RUN/metrics.json holds the mean, SD and per-fold values."""
    from fusion.evaluate import METRICS_FILE, evaluate_folds, evaluate_run

    def progress(event: dict) -> None:
        if "epoch" in event:
            err_console.print(f"  {event.get('ablation', '')} epoch {event['epoch']}/{event['epochs']} "
                              f"val loss {event.get('val_loss', float('nan')):.4f}")
        elif event.get("stage") != "done":
            err_console.print(f"[dim]{event['stage']}[/] {event.get('what', '')}")

    folds = (run / "fold_0").is_dir() and not (run / "model.safetensors").is_file()
    if folds and out is not None:
        raise fail("--out is for a single run; a --cv run's evaluation is written into each fold and RUN")
    try:
        if folds:
            result = evaluate_folds(run, lake, retrain_ablations=retrain, progress=progress, n_boot=n_boot)
        else:
            result = evaluate_run(run, lake, retrain_ablations=retrain, progress=progress, n_boot=n_boot,
                                  out_dir=out)
    except _errors() as exc:
        raise fail(str(exc)) from None
    if folds:
        _print_folds(result)
        _print_notes(result)
        console.print(f"wrote {escape(str(run / METRICS_FILE))} and each fold's metrics.json and plots")
    else:
        _print_summary(result)
        _print_notes(result)
        console.print(f"wrote {escape(str((out or run) / METRICS_FILE))} and {escape(', '.join(result['plots']))}")


def _print_notes(result: dict) -> None:
    """The evaluation's notes, and a warning when the lake changed since training."""
    for note in result.get("notes") or []:
        console.print(f"note: {escape(note)}")
    if result.get("lake_changed") and not result.get("external_validation"):  # another lake: its own note
        err_console.print("[yellow]warning:[/] the lake changed since this model was trained (its manifest hash "
                          "differs): inputs and outcomes may differ from training's; metrics.json says lake_changed")


def _print_summary(result: dict) -> None:
    for task, scores in result["tasks"].items():
        if "skipped" in scores:
            console.print(f"{task}: skipped ({scores['skipped']})")
            continue
        interval = "(95% CI)" if result.get("n_boot") else "(no intervals: --n-boot 0)"
        _print_task(task, scores, f"{interval}, n={scores['n']}", _fmt)


def _print_folds(result: dict) -> None:
    for task, scores in result["tasks"].items():
        _print_task(task, scores, f"mean +- SD over {result['k']} folds (n={scores['n']})", _fmt_folds)


def _print_task(task: str, scores: dict, what: str, fmt: Callable[[dict | None], str]) -> None:
    """One table: the model, its baselines and ablations on the task's headline metric."""
    metric = HEADLINE.get(task, next(iter(scores["model"]), ""))
    table = Table(title=f"{task}: {metric} {what}")
    table.add_column("model")
    table.add_column(metric, justify="right")
    rows = [("model", scores["model"])] + [(f"baseline {k}", v) for k, v in scores["baselines"].items()] \
        + [(k, v) for k, v in scores["ablations"].items()]
    for name, values in rows:
        table.add_row(name, fmt(values.get(metric)))
    console.print(table)


def _fmt_folds(item: dict | None) -> str:
    if not item or item["value"] is None:
        return "n/a"
    return f"{item['value']:.3f}" + ("" if item["sd"] is None else f" +- {item['sd']:.3f}")


def _fmt(item: dict | None) -> str:
    if not item or item["value"] is None:
        return "n/a"
    if item["ci_low"] is None:
        return f"{item['value']:.3f}"
    return f"{item['value']:.3f} ({item['ci_low']:.3f}-{item['ci_high']:.3f})"


def predict(
    run: RunArgument,
    patient: Annotated[str | None, typer.Option(
        "--patient", help="Patient key, any identifier (e.g. MRN), or the id of one of their genomics samples.")]
    = None,
    lake: LakeOption = None,
    explain: Annotated[bool, typer.Option("--explain/--no-explain", help="Add modality contributions, "
                                          "image attribution and top features.")] = True,
    every: Annotated[bool, typer.Option("--all", help="Every patient of the lake, one row each, without "
                                        "explanations, written to --out.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="With --all: the table to write (.parquet or .csv).")]
    = None,
) -> None:
    """Print one patient's predictions and explanations as JSON (see fusion.predict.predict_patient), or with
    --all write every patient's to a table (fusion.predict.predict_cohort)."""
    from fusion.predict import (
        PREDICTION_FORMATS,
        PredictError,
        UnknownPatientError,
        predict_cohort,
        predict_patient,
        write_predictions,
    )
    from fusion.run import load_run
    from ingest.lake import Lake

    if (patient is None) == (not every):
        raise fail("pass --patient ID for one patient, or --all --out FILE for every patient of the lake")
    if every and (out is None or out.suffix.lower() not in PREDICTION_FORMATS):  # before the scoring
        raise fail("--all writes a table: pass --out FILE.parquet or --out FILE.csv")
    if out is not None and not every:
        raise fail("--out is for --all; one patient's prediction is printed as JSON")
    try:
        loaded = load_run(run)
        lake_path = lake or loaded.meta.get("lake") or loaded.config.data.lake
        if lake_path is None or not Path(lake_path).is_dir():
            raise fail(f"lake {lake_path} does not exist; pass --lake")
        if every:
            table, left_out = predict_cohort(loaded, Lake(lake_path))
            write_predictions(table, out)
        else:
            result = predict_patient(loaded, Lake(lake_path), patient, explain=explain)
    except (UnknownPatientError, PredictError, *_errors()) as exc:
        raise fail(str(exc).strip("'\"")) from None
    if not every:
        typer.echo(json.dumps(result, indent=1))
        return
    splits = ", ".join(f"{name} {n}" for name, n in table["split"].value_counts().items())
    console.print(f"wrote {len(table)} patients ({splits}) to {escape(str(out))}")
    if left_out:
        console.print(f"note: {left_out} patient(s) of the lake are left out: no index date, or none of the run's "
                      "modalities")
