"""The typed configuration of a fusion run: one pydantic tree, loaded from YAML, overridable with ``--set``.

Every section forbids unknown keys, so a typo fails loudly. Defaults follow the synthetic lung-nodule cohort
(``ingest.synth.codes``); real data overrides the code sets in YAML.

Cancer code sets: SNOMED CT descendants cannot be computed offline, so the index condition is matched by an
explicit list of codes (``data.index.cancer_codes``: ``system|code``, or a bare code matched in any system)
and, failing that, by a case-insensitive regex on the
condition's display text (``data.index.cancer_display_regex``, default
``carcinoma|cancer|neoplasm|tumou?r|nodule``, minus ``data.index.cancer_display_exclude``: family history,
history of, screening, ...). List every code you mean, or rely on the regex knowingly.

Overrides: ``apply_overrides(config, ["train.lr=1e-3", "modalities.image.enabled=false"])``; values are parsed
as YAML scalars/lists (``1e-3``, ``true``, ``[365, 730]``) and re-validated, so types are coerced and checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.synth import codes

BUILTIN_MODALITIES = ("ehr", "genomics", "image")
DEFAULT_GENES = ("EGFR", "KRAS", "TP53", "STK11", "KEAP1", "ALK", "BRAF", "PIK3CA")


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no inf or nan in any number


def _treatment_map() -> dict[str, str]:
    return {code: treatment for (treatment, _), drugs in codes.REGIMENS.items() for code in drugs}


class IndexConfig(_Strict):
    """How the index date (time zero) of each patient is found.

    The onset of the first Condition whose code is in ``cancer_codes``; for a patient with none, of the first
    whose display matches ``cancer_display_regex`` and not ``cancer_display_exclude`` (a family history, a
    history of, a screening is not a diagnosis); a labels ``index_date`` overrides both. Patients without any
    are left out.
    """

    cancer_codes: list[str] = Field(
        default_factory=lambda: [f"{codes.SNOMED}|{c}" for c, _ in codes.DIAGNOSIS_SNOMED.values()],
        description="'system|code' (that code in that system) or a bare code (in any system)")
    cancer_display_regex: str | None = r"carcinoma|cancer|neoplasm|tumou?r|nodule"
    cancer_display_exclude: str | None = (r"family history|history of|screening|fear of|at risk|suspected|"
                                          r"ruled out|benign neoplasm")
    grace_days: float = Field(0.0, ge=0.0, description="records dated before index + grace_days are features "
                                                        "(0: strictly before the index date)")

    @model_validator(mode="after")
    def _regexes_compile(self) -> IndexConfig:
        for name in ("cancer_display_regex", "cancer_display_exclude"):
            try:
                re.compile(getattr(self, name) or "")
            except re.error as err:
                raise ValueError(f"{name} is not a regular expression ({err}); put a backslash before "
                                 "a special character such as ( or +") from None
        return self


class EhrConfig(_Strict):
    """Time-aware EHR features (see ``fusion.cohort``)."""

    lab_system: str = codes.LOINC
    lab_codes: list[str] | None = Field(None, description="explicit lab codes; None = top_k_labs by coverage")
    top_k_labs: int = Field(20, ge=0)
    windows_days: list[float] = Field(default_factory=lambda: [365.0])
    condition_codes: list[str] | None = Field(None, description="comorbidity codes, 'system|code' or a bare code "
                                                                "(any system); None = top-K by coverage")
    top_k_conditions: int = Field(20, ge=0)
    medication_codes: list[str] | None = Field(None, description="prior-medication codes, as condition_codes; "
                                                                 "None = top-K")
    top_k_medications: int = Field(20, ge=0)
    ecog_code: str = codes.ECOG_LOINC[0]
    karnofsky_code: str = Field("89243-0", description="Karnofsky performance status code (any system): its score "
                                                       "as ECOG where no ECOG is known")
    stage_code: str = Field(codes.STAGE_LOINC[0], description="clinical stage group code (any system)")
    clinical_stage_codes: list[str] = Field(
        default_factory=lambda: [f"{codes.SNOMED}|399537006"],
        description="other codes of the clinical stage group, as condition_codes (mCODE STU3+: SNOMED)")
    pathological_stage_codes: list[str] = Field(
        default_factory=lambda: [f"{codes.LOINC}|21902-2", f"{codes.SNOMED}|399588009"],
        description="pathological stage group codes, as condition_codes: the stage where no clinical one is "
                    "known before the cutoff")
    other_stage_codes: list[str] = Field(
        default_factory=lambda: [f"{codes.LOINC}|21914-7", f"{codes.SNOMED}|399390009"],
        description="stage group codes neither clinical nor pathological (LOINC Stage group.other, SNOMED TNM "
                    "stage grouping), as condition_codes: the stage where neither of those is known")
    marker_codes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "er": [f"{codes.LOINC}|16112-5", f"{codes.LOINC}|85337-4"],
            "pr": [f"{codes.LOINC}|16113-3", f"{codes.LOINC}|85339-0"],
            "her2": [f"{codes.LOINC}|48676-1", f"{codes.LOINC}|85319-2", f"{codes.LOINC}|85318-4"],
        },
        description="coded tumour markers: feature name (column marker:<name>) -> its test codes, as "
                    "condition_codes; 1 positive, 0 negative (SNOMED 10828004 / 260385009, LOINC LA6576-8 / "
                    "LA6577-6, else the display's word), unknown otherwise",
    )
    smoking_code: str = codes.SMOKING_LOINC[0]
    smoking_map: dict[str, float] = Field(
        default_factory=lambda: {
            codes.SMOKING_SNOMED[k][0]: float(i) for i, k in enumerate(("never", "former", "current"))
        },
        description="smoking status value code -> ordinal (then LOINC LL2201-3 / SNOMED answer codes, then the "
                    "display: never 0, former 1, current 2, a smoker of unknown current status 1.5)",
    )

    @model_validator(mode="after")
    def _windows_positive(self) -> EhrConfig:
        if any(w <= 0 for w in self.windows_days):
            raise ValueError(f"windows_days must be positive, got {self.windows_days}")
        return self


class GenomicsConfig(_Strict):
    genes: list[str] | None = Field(
        default_factory=lambda: list(DEFAULT_GENES),
        description="gene status columns; None = top_k_genes by mutation count",
    )
    top_k_genes: int = Field(20, ge=1)


class ImagesConfig(_Strict):
    modality: str | None = Field(None, description="only images of this modality (e.g. CT); None = any")
    image_size: int | None = Field(None, ge=8, description="resize every slice to this square size (pixels)")
    max_slices: int | None = Field(32, ge=1, description="evenly subsample longer series to this many slices")


class TargetsConfig(_Strict):
    diagnosis_map: dict[str, str] = Field(
        default_factory=lambda: {code: name for name, (code, _) in codes.DIAGNOSIS_SNOMED.items()},
        description="index condition code -> diagnosis class",
    )
    diagnosis_classes: list[str] | None = Field(
        default_factory=lambda: list(codes.DIAGNOSES),
        description="class order; None = sorted observed classes",
    )
    survival_endpoint: str = Field(
        "os", pattern=r"^[a-z][a-z0-9_]*$",
        description="os or pfs (from FHIR, and from curated labels of that endpoint), or another endpoint of the "
                    "curated labels (dfs, dss, ...: `ingest labels --endpoint`, `ingest cbioportal --endpoint`); "
                    "letter case ignored")
    progression_code: list[str] = Field(
        default_factory=lambda: [codes.DISEASE_STATUS_LOINC[0], "88040-1"],
        description="codes (any system) of the disease-status observation: LOINC 97509-4 (mCODE STU2+) and 88040-1 "
                    "(mCODE STU1, 'Response to cancer treatment'); one code is a list of one (a run saved before)")
    progressing_codes: list[str] = Field(default_factory=lambda: [codes.DISEASE_STATUS["progressing"][0]])
    response_code: str = codes.RECIST_LOINC[0]
    response_positive: list[str] = Field(default_factory=lambda: [codes.RECIST[k][0] for k in ("CR", "PR")])
    response_negative: list[str] = Field(default_factory=lambda: [codes.RECIST[k][0] for k in ("SD", "PD")])
    treatment_map: dict[str, str] = Field(
        default_factory=_treatment_map, description="medication code (RxNorm) -> treatment name"
    )
    treatments: list[str] | None = Field(
        default_factory=lambda: list(codes.TREATMENTS),
        description="treatment order; None = sorted observed treatments",
    )
    treatment_labels: dict[str, str] = Field(
        default_factory=lambda: dict(codes.TREATMENT_LABELS),
        description="treatment name -> the name the app shows (e.g. egfr_tki -> EGFR TKI); a treatment without "
                    "one is shown by its name",
    )

    @field_validator("survival_endpoint", mode="before")
    @classmethod
    def _endpoint_lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("progression_code", mode="before")
    @classmethod
    def _one_code_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class DataConfig(_Strict):
    lake: str | None = Field(None, description="lake directory (the CLI's --lake overrides it)")
    index: IndexConfig = Field(default_factory=IndexConfig)
    ehr: EhrConfig = Field(default_factory=EhrConfig)
    genomics: GenomicsConfig = Field(default_factory=GenomicsConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    targets: TargetsConfig = Field(default_factory=TargetsConfig)


class SplitConfig(_Strict):
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    stratify: Literal["diagnosis", "event", "none"] = "diagnosis"
    seed: int | None = Field(None, description="None = train.seed")

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


class ModalityConfig(_Strict):
    """One input modality: ``ehr``, ``genomics``, ``image`` or a named extra modality of the features table."""

    enabled: bool = True
    encoder: str = "mlp"
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)


def _default_modalities() -> dict[str, ModalityConfig]:
    return {
        "ehr": ModalityConfig(encoder="mlp"),
        "genomics": ModalityConfig(encoder="mlp"),
        "image": ModalityConfig(
            enabled=False,
            encoder="timm",
            encoder_kwargs={"model_name": "resnet18", "in_chans": 1, "out_dim": 64},
        ),
    }


class FusionConfig(_Strict):
    name: str = "gated_attention"
    out_dim: int = Field(64, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TaskConfig(_Strict):
    enabled: bool = True
    weight: float = Field(1.0, ge=0.0)


class DiagnosisTaskConfig(TaskConfig):
    modalities: list[str] | None = Field(
        None, description="modalities the diagnosis head reads (None: all); leave out what is recorded at or "
                          "after the diagnosis (staging in the EHR block, the biopsy's genomics)")


class SurvivalTaskConfig(TaskConfig):
    modalities: list[str] | None = Field(
        None, description="modalities the survival head reads (None: all); with coxnet_offset, the tabular "
                          "inputs still enter the log-risk through the offset's linear terms")
    coxnet_offset: bool = Field(
        False, description="add an elastic-net Cox model of the tabular inputs, fitted on the training split "
                           "(penalty chosen on the validation split) before the network, to the log-risk as a "
                           "fixed offset: the network learns what the images and non-linear terms add to it "
                           "(no effect without a tabular modality)")
    response_link: bool = Field(
        False, description="add w * p(response | the row's treatment) from the response head to the log-risk "
                           "(w learned, rows without a treatment get no term): survival is then predicted "
                           "under a treatment, and every patient's survival trains the response head")
    auxiliary_endpoint: Literal["os", "pfs"] | None = Field(
        None, description="a second survival endpoint that also trains the log-risk (Cox loss, weighted by "
                          "auxiliary_weight; training only): e.g. pfs next to os, whose progressions add events")
    auxiliary_weight: float = Field(0.5, gt=0.0, description="weight of the auxiliary endpoint's Cox loss")


class ResponseTaskConfig(TaskConfig):
    hidden_dim: int | None = Field(
        64, ge=1, description="hidden width of each treatment's readout of the fused embedding; null: a linear "
                              "readout (a logistic model per treatment), steadier with a few hundred labels")


class TasksConfig(_Strict):
    diagnosis: DiagnosisTaskConfig = Field(default_factory=DiagnosisTaskConfig)
    survival: SurvivalTaskConfig = Field(default_factory=SurvivalTaskConfig)
    response: ResponseTaskConfig = Field(default_factory=ResponseTaskConfig)
    head_hidden_dim: int | None = None
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    cox_queue_size: int = Field(0, ge=0, description="memory bank for the Cox loss on small batches")


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    max_grad_norm: float | None = Field(5.0, gt=0.0, description="gradient clipping; None = off")
    patience: int = Field(
        10, ge=1, description="epochs without improvement of the validation score (C-index / AUROC) before stopping"
    )
    seed: int = 0
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    image_augment: Literal["none", "flip", "flip_rot90"] = Field(
        "none", description="random flips (and 90-degree rotations) of training images; see fusion.augment")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="auto | cpu | cuda | cuda:N | mps (Apple GPUs)")
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1, description="CPU threads torch may use (None: torch's default, all "
                                                           "cores); e.g. 1 on a machine shared with other jobs")
    deterministic: bool = True
    pretrain_modalities: list[str] = Field(
        default_factory=list, description="modalities the model sees alone in a first training phase (e.g. "
                                          "[image]); the second phase starts from its best epoch with all")
    pretrain_epochs: int = Field(0, ge=0, description="most epochs of that first phase (early-stopped like "
                                                      "the second); 0 = off")


class EvalConfig(_Strict):
    horizons_days: list[Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=lambda: [365.0, 730.0, 1095.0], min_length=1,
        description="days after the index date at which survival is scored (calibration, time-dependent AUC)")
    n_boot: int = Field(200, ge=0)


class RunConfig(_Strict):
    """The whole run: data -> cohort, modalities -> encoders, fusion, tasks -> heads and losses, training."""

    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    modalities: dict[str, ModalityConfig] = Field(default_factory=_default_modalities)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _some_modality(self) -> RunConfig:
        if not self.enabled_modalities():
            raise ValueError("no modality is enabled; enable at least one under `modalities`")
        if not any(t.enabled for t in (self.tasks.diagnosis, self.tasks.survival, self.tasks.response)):
            raise ValueError("no task is enabled; enable at least one under `tasks`")
        for name in ("diagnosis", "survival"):
            task = getattr(self.tasks, name)
            if not task.enabled or task.modalities is None:
                continue
            unknown = sorted(set(task.modalities) - set(self.modalities))
            if unknown:
                raise ValueError(f"tasks.{name}.modalities names unknown modalities {unknown}; "
                                 f"known: {sorted(self.modalities)}")
            if not set(task.modalities) & set(self.enabled_modalities()):
                raise ValueError(f"tasks.{name}.modalities {task.modalities}: none of them is enabled; "
                                 f"enable one or disable tasks.{name}")
        survival = self.tasks.survival
        if survival.enabled and survival.response_link and not self.tasks.response.enabled:
            raise ValueError("tasks.survival.response_link needs the response task; enable tasks.response or "
                             "set tasks.survival.response_link=false")
        if survival.auxiliary_endpoint == self.data.targets.survival_endpoint:
            raise ValueError(f"tasks.survival.auxiliary_endpoint is {survival.auxiliary_endpoint!r}, the endpoint "
                             "the model already trains on (data.targets.survival_endpoint); name the other one "
                             "or set it to null")
        pretrain = self.train.pretrain_modalities
        if self.train.pretrain_epochs and not pretrain:
            raise ValueError("train.pretrain_epochs is set but train.pretrain_modalities is empty; name the "
                             "modalities of the first phase (e.g. [image]) or set train.pretrain_epochs=0")
        if pretrain and self.train.pretrain_epochs:
            disabled = sorted(set(pretrain) - set(self.enabled_modalities()))
            if disabled:
                raise ValueError(f"train.pretrain_modalities names {disabled}, which are not enabled; enabled: "
                                 f"{self.enabled_modalities()}")
            if set(pretrain) == set(self.enabled_modalities()):
                raise ValueError("train.pretrain_modalities names every enabled modality, so the first phase "
                                 "would be ordinary training; leave at least one modality out of it")
        return self

    def enabled_modalities(self) -> list[str]:
        """Names of the enabled modalities, in config order."""
        return [name for name, m in self.modalities.items() if m.enabled]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (None = all defaults) and apply ``--set`` style overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    config = _validate(raw, source=str(path) if path else "defaults")
    return apply_overrides(config, overrides) if overrides else config


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """A new config with ``key.path=value`` overrides applied (values parsed as YAML, then validated)."""
    raw = config.model_dump(mode="json")
    for item in overrides:
        _set_path(raw, item)
    return _validate(raw, source="overrides")


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _validate(raw: dict, *, source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            valid = _valid_keys(err["loc"]) if err["type"] == "extra_forbidden" else None
            if err["type"] == "string_type" and isinstance(err.get("input"), int | float):
                # YAML reads 254637007 as a number, and 0123 as 83: a code must be quoted to stay itself
                line += (f" (got the number {err['input']!r}: quote codes, e.g. --set "
                         "'data.index.cancer_codes=[\"254637007\"]', or [\"...\"] in the YAML file)")
            lines.append(line + (f" (valid keys: {valid})" if valid else ""))
        raise ConfigError(f"invalid config ({source}):\n" + "\n".join(lines)) from None


def _valid_keys(loc: tuple) -> str | None:
    """The keys allowed next to the unknown key at ``loc`` (None where the section is free-form)."""
    parts = [str(p) for p in loc[:-1]]
    model: type[BaseModel] | None = RunConfig
    for depth, part in enumerate(parts):
        if model is not None and part in model.model_fields:
            model = _submodel(model, part)
        elif _is_modality_map(parts, depth):
            model = ModalityConfig
        else:
            return None
    return ", ".join(model.model_fields) if model is not None else None


def _set_path(raw: dict, item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``raw``; unknown keys of fixed sections raise ConfigError."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-3)")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    model: type[BaseModel] | None = RunConfig
    node = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if model is not None:
            if part not in model.model_fields:
                where = ".".join(parts[:depth]) or "the top level"
                valid = ", ".join(model.model_fields)
                raise ConfigError(f"override {key!r}: unknown key {part!r} in {where}; valid keys: {valid}")
            model = _submodel(model, part)
        elif _is_modality_map(parts, depth):
            model = ModalityConfig
        if last:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child


def _is_modality_map(parts: list[str], depth: int) -> bool:
    return depth == 1 and parts[0] == "modalities"


def _submodel(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    annotation = model.model_fields[field].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
