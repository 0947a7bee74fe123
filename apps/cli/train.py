"""``tumorboard train``: train a fusion model on a lake and write a run directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from apps.cli.common import Command, console, err_console, fail


def register(app: typer.Typer) -> None:
    app.command("train", cls=Command)(train)


def train(
    lake: Annotated[Path, typer.Option("--lake", help="The lake directory.")],
    config: Annotated[Path, typer.Option("--config", help="YAML run config (see configs/).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (must not exist).")],
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a config value, e.g. --set train.lr=1e-3 (repeatable).")] = None,
    cv: Annotated[int | None, typer.Option("--cv", help="K-fold cross-validation: OUT/fold_<k>/ + summary.",
                                           min=2)] = None,
) -> None:
    """Train a multimodal model (seeded; early stopping on the validation C-index / AUROC; CPU or GPU)."""
    if not lake.is_dir():  # the cheap checks come before importing torch (seconds)
        raise fail(f"lake {lake} does not exist; create one with `tumorboard ingest ...`")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise fail(f"run directory {out} already exists; choose a new --out or remove it")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fusion.cohort import CohortError
    from fusion.config import ConfigError, load_config
    from fusion.run import RunError, check_model_arguments
    from fusion.train import train as run_training

    try:
        cfg = load_config(config, overrides or [])
        check_model_arguments(cfg)
    except (ConfigError, RunError) as exc:
        raise fail(str(exc)) from None

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("training", total=cfg.train.epochs, status="")

        def progress(record: dict) -> None:
            fold = f"fold {record['fold'] + 1}/{record['folds']} " if "fold" in record else ""
            fold += "pretraining " if record.get("phase") == "pretrain" else ""
            status = f"train {record['train_loss']:.4f}  val {record['val_loss']:.4f}"
            for key, label in (("val_c_index", "C"), ("val_accuracy", "acc")):
                if math.isfinite(record.get(key, math.nan)):
                    status += f"  {label} {record[key]:.3f}"
            bar.update(task, description=f"{fold}epoch {record['epoch']}", completed=record["epoch"],
                       total=record["epochs"], status=status)

        try:
            run_dir = run_training(cfg, lake, out, progress=progress, cv=cv)
        except (CohortError, RunError, ConfigError, FloatingPointError, ValueError) as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail(f"interrupted: nothing was written ({out} is only created when training finishes)",
                       code=130) from None
    console.print(f"run written to [bold]{escape(str(run_dir))}[/]")
    _print_cohort(run_dir)


# cohort summary counts worth a line after training (patients the model could not use, values it left out)
LEFT_OUT = {"without_index_date": "patients without an index date (no cancer condition, no labels index_date)",
            "without_any_modality": "patients without any enabled modality",
            "without_survival_time": "patients without a survival time (death before the index, undated, or "
                                     "curated labels of another endpoint only)",
            "lab_values_other_unit": "lab values in another unit than their code's main one"}


def _print_cohort(run_dir: Path) -> None:
    """One line with the cohort's splits, and one per count of what was left out (when not zero)."""
    import json

    from fusion.run import META_FILE

    paths = sorted(Path(run_dir).glob(f"**/{META_FILE}"))  # one run, or one per fold
    if not paths:
        return
    meta = json.loads(paths[0].read_text())
    summary = dict(meta.get("cohort_summary", {}))
    if not meta.get("spec", {}).get("survival", True):  # no survival task: nobody was left out for lack of a time
        summary.pop("without_survival_time", None)
    console.print("cohort: " + ", ".join(f"{summary[k]} {k}" for k in ("train", "val", "test") if k in summary)
                  + (" (fold 1)" if len(paths) > 1 else ""))
    for key, text in LEFT_OUT.items():
        if summary.get(key):
            console.print(f"  left out: {summary[key]} {text}")
    for note in meta.get("notes") or []:
        console.print(f"note: {escape(note)}")
