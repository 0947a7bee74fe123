"""Configuration of the synthetic cohort generator."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SynthConfig(BaseModel):
    """What to generate.

    Rates are fractions of all patients. ``vcf_fraction`` is the fraction of *sequenced* patients that
    also get a VCF next to the cohort MAF. Image geometry: ``n_slices`` axial slices of
    ``image_size`` x ``image_size`` pixels, ``pixel_spacing_mm`` in-plane, ``slice_thickness_mm`` apart.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_patients: int = Field(200, ge=1)
    seed: int = Field(0, ge=0)
    bundles: bool = False
    png: bool = True
    image_missing_rate: float = Field(0.15, ge=0.0, le=1.0)
    genomics_missing_rate: float = Field(0.2, ge=0.0, le=1.0)
    vcf_fraction: float = Field(0.3, ge=0.0, le=1.0)
    benign_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    image_size: int = Field(64, ge=32, le=512)
    n_slices: int = Field(12, ge=4, le=256)
    pixel_spacing_mm: float = Field(4.0, gt=0.0)
    slice_thickness_mm: float = Field(5.0, gt=0.0)
    enrolment_start: date = date(2015, 1, 1)
    enrolment_end: date = date(2022, 6, 30)
    data_cutoff: date = date(2024, 12, 31)
    dropout_per_year: float = Field(0.08, ge=0.0)

    @model_validator(mode="after")
    def _dates_ordered(self) -> SynthConfig:
        if not self.enrolment_start < self.enrolment_end < self.data_cutoff:
            raise ValueError("need enrolment_start < enrolment_end < data_cutoff")
        return self
