"""Encoders, fusion modules, heads and the multimodal model; importing this package fills the registries."""

from fusion.models import image, tabular  # noqa: F401  (registers encoders)
from fusion.models.fusion import FusionOutput, masked_softmax, modality_dropout
from fusion.models.heads import BreslowEstimator, DiagnosisHead, ResponseHead, SurvivalHead
from fusion.models.model import FusionModel, HeadsConfig
from fusion.models.offset import RiskOffset
from fusion.models.registry import (
    create_encoder,
    create_fusion,
    encoder_kind,
    list_encoders,
    list_fusions,
    register_encoder,
    register_fusion,
)

__all__ = [
    "BreslowEstimator",
    "DiagnosisHead",
    "FusionModel",
    "FusionOutput",
    "HeadsConfig",
    "ResponseHead",
    "RiskOffset",
    "SurvivalHead",
    "create_encoder",
    "create_fusion",
    "encoder_kind",
    "list_encoders",
    "list_fusions",
    "masked_softmax",
    "modality_dropout",
    "register_encoder",
    "register_fusion",
]
