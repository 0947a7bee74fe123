"""Synthetic cohort generator: determinism, validity of every modality, agreement with the truth."""

from __future__ import annotations

import hashlib
import importlib
import io
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pydicom
import pytest
import typer
from typer.testing import CliRunner

from ingest.synth import SynthConfig, generate_cohort
from ingest.synth.cohort import simulate_cohort
from ingest.synth.phantom import Geometry, _anatomy, ct_volume

N = 30


def _cohort(root: Path, seed: int, **kw) -> Path:
    out = root / f"cohort-{seed}"
    generate_cohort(out, SynthConfig(n_patients=N, seed=seed, bundles=True, **kw))
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return _cohort(tmp_path_factory.mktemp("synth"), seed=0)


@pytest.fixture(scope="module")
def truth(cohort) -> pd.DataFrame:
    return pd.read_parquet(cohort / "truth.parquet")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _ndjson(cohort: Path, kind: str) -> list[dict]:
    return [orjson.loads(line) for line in (cohort / "fhir" / f"{kind}.ndjson").read_bytes().splitlines()]


def _r4b(kind: str):
    return getattr(importlib.import_module(f"fhir.resources.R4B.{kind.lower()}"), kind)


def test_same_seed_same_bytes_other_seed_differs(cohort, tmp_path):
    again = _hashes(_cohort(tmp_path, seed=0))
    assert again == _hashes(cohort)
    other = _hashes(_cohort(tmp_path, seed=1))
    assert other["fhir/Patient.ndjson"] != again["fhir/Patient.ndjson"]
    assert other["genomics/cohort.maf"] != again["genomics/cohort.maf"]


def test_every_fhir_resource_validates_as_r4b_and_references_resolve(cohort):
    ids: dict[str, set[str]] = {}
    resources = []
    for kind in ("Patient", "Condition", "Observation", "MedicationRequest", "Procedure", "Encounter"):
        rows = _ndjson(cohort, kind)
        assert rows, kind
        model = _r4b(kind)
        for res in rows:
            model.model_validate(res)
        ids[kind] = {r["id"] for r in rows}
        resources += rows
    refs = [m.decode() for r in resources for m in _references(orjson.dumps(r))]
    assert refs
    for ref in refs:
        kind, rid = ref.split("/")
        assert rid in ids[kind], ref


def _references(raw: bytes) -> list[bytes]:
    import re

    return re.findall(rb'"reference":"([^"]+)"', raw)


def test_bundles_are_valid_transactions_with_urn_uuid_references(cohort, truth):
    files = sorted((cohort / "fhir_bundles").glob("*.json"))
    assert {f.stem for f in files} == set(truth["patient_id"])
    bundle_model = _r4b("Bundle")
    for f in files[:10]:
        bundle = orjson.loads(f.read_bytes())
        bundle_model.model_validate(bundle)
        assert bundle["type"] == "transaction"
        full_urls = set()
        for entry in bundle["entry"]:
            res = entry["resource"]
            _r4b(res["resourceType"]).model_validate(res)
            assert entry["fullUrl"] == f"urn:uuid:{res['id']}"
            assert entry["request"] == {"method": "POST", "url": res["resourceType"]}
            full_urls.add(entry["fullUrl"])
        refs = {r.decode() for r in _references(f.read_bytes())}
        assert refs and refs <= full_urls


def test_fhir_agrees_with_truth(cohort, truth):
    t = truth.set_index("patient_id")
    patients = _ndjson(cohort, "Patient")
    assert {p["id"] for p in patients} == set(t.index)
    for p in patients:
        row = t.loc[p["id"]]
        assert p["identifier"][0]["value"] == row["mrn"]
        assert p["identifier"][0]["type"]["coding"][0]["code"] == "MR"
        assert ("deceasedDateTime" in p) == bool(row["os_event"])
        if row["os_event"]:
            death = pd.Timestamp(p["deceasedDateTime"][:10], tz="UTC")
            assert (death - row["index_date"]).days == row["os_time"]
    conditions = _ndjson(cohort, "Condition")
    snomed = {"benign": "427359005", "adenocarcinoma": "35917007", "squamous": "254634000"}
    primary = {
        c["subject"]["reference"][8:]: c
        for c in conditions
        if c["code"]["coding"][0]["code"] in snomed.values()
    }
    for pid, row in t.iterrows():
        assert primary[pid]["code"]["coding"][0]["code"] == snomed[row["diagnosis"]]
        assert primary[pid]["onsetDateTime"][:10] == str(row["index_date"].date())
    meds = _ndjson(cohort, "MedicationRequest")
    treated = {m["subject"]["reference"][8:] for m in meds}
    assert treated == set(t.index[t["treatment"] != "none"])


def test_labs_exist_before_and_after_index_and_progression_is_recorded(cohort, truth):
    t = truth.set_index("patient_id")
    obs = pd.DataFrame(
        [
            {
                "pid": o["subject"]["reference"][8:],
                "code": o["code"]["coding"][0]["code"],
                "when": o["effectiveDateTime"][:10],
                "value": o.get("valueCodeableConcept", {}).get("coding", [{}])[0].get("code"),
            }
            for o in _ndjson(cohort, "Observation")
        ]
    )
    index = t["index_date"].dt.tz_convert(None)
    obs["day"] = (pd.to_datetime(obs["when"]) - index.loc[obs["pid"]].to_numpy()).dt.days
    labs = obs[obs["code"].isin(["2532-0", "1751-7", "718-7", "2039-6"])]
    assert (labs.groupby("pid")["day"].min() < 0).all()
    assert labs.loc[labs["day"] < 0, "pid"].nunique() == len(t)
    assert (labs["day"] > 0).sum() > 0
    assert obs["code"].isin(["72166-2", "89247-1", "21908-9", "97509-4", "21976-6"]).any()
    worse = obs[(obs["code"] == "97509-4") & (obs["value"] == "271299001")]
    assert len(worse) > 0
    assert (worse["day"].to_numpy() >= t.loc[worse["pid"], "progression_day"].to_numpy()).all()


def test_dicom_series_stack_by_position_with_plausible_hu(cohort, truth):
    imaged = truth[truth["has_image"]]
    series_dirs = sorted(p for p in (cohort / "dicom").glob("*/*/*") if p.is_dir())
    assert {p.parts[-3] for p in series_dirs} == set(imaged["mrn"])
    shuffled = 0
    for folder in series_dirs:
        files = sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem))
        slices = [pydicom.dcmread(f) for f in files]
        ds0 = slices[0]
        assert ds0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds0.Modality == "CT" and ds0.PatientID == folder.parts[-3]
        assert ds0.StudyInstanceUID == folder.parts[-2] and ds0.SeriesInstanceUID == folder.parts[-1]
        normal = np.cross(*np.reshape(ds0.ImageOrientationPatient, (2, 3)))
        pos = [float(np.dot(normal, s.ImagePositionPatient)) for s in slices]
        order = np.argsort(pos)
        shuffled += bool(np.any(order != np.arange(len(order))))
        assert np.allclose(np.diff(np.sort(pos)), float(ds0.SliceThickness))
        vol = np.stack(
            [
                slices[i].pixel_array * float(slices[i].RescaleSlope) + float(slices[i].RescaleIntercept)
                for i in order
            ]
        )
        assert vol.shape == (12, 64, 64)
        assert vol.min() < -950 and np.median(vol[:, 0:3, :]) < -950  # air in front of the chest
        assert -100 < np.median(vol[:, 10:50, 31:33]) < 150  # mediastinum (soft tissue) on the midline
        lungs = [np.median(vol[:, 26:38, 12:20]), np.median(vol[:, 26:38, 44:52])]
        assert -900 < min(lungs) < -700  # at least one lung is free of the nodule
        study = pd.Timestamp(ds0.StudyDate, tz="UTC")
        index = imaged.set_index("mrn").loc[ds0.PatientID, "index_date"]
        assert 3 <= (index - study).days <= 14
    assert shuffled > len(series_dirs) // 2


def test_fast_dicom_encoder_matches_pydicom(tmp_path):
    from pydicom.dataset import FileMetaDataset

    from ingest.synth.dicom_writer import SliceEncoder, _template

    geo = Geometry(16, 4, 2.0, 3.0)
    template = _template(geo)
    values = {
        "SOPInstanceUID": "1.2.3.4.5",
        "StudyDate": "20200102",
        "SeriesDate": "20200102",
        "ContentDate": "20200102",
        "PatientID": "12345678",
        "PatientBirthDate": "19500101",
        "PatientSex": "F",
        "StudyInstanceUID": "1.2.3",
        "SeriesInstanceUID": "1.2.3.4",
        "InstanceNumber": "3",
        "ImagePositionPatient": "-15.0\\-15.0\\2.5",
        "FrameOfReferenceUID": "1.2.9",
        "SliceLocation": "2.5",
    }
    pixels = np.arange(-128, 128, dtype="<i2").reshape(16, 16)
    fast = SliceEncoder(template)(
        {**{k: v.encode() for k, v in values.items()}, "PixelData": pixels.tobytes()}
    )
    full = pydicom.Dataset()
    for elem in template:
        full.add(elem)
    for k, v in values.items():
        setattr(full, k, v)
    full.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = template.SOPClassUID
    meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    full.file_meta = meta
    buf = io.BytesIO()
    full.save_as(buf, enforce_file_format=True)
    assert fast == buf.getvalue()


def test_png_manifest_matches_images(cohort, truth):
    manifest = pd.read_csv(cohort / "png" / "manifest.csv", dtype=str)
    assert list(manifest.columns) == ["path", "patient_id", "study_date", "modality"]
    assert set(manifest["patient_id"]) == set(truth.loc[truth["has_image"], "mrn"])
    from PIL import Image

    img = np.asarray(Image.open(cohort / "png" / manifest["path"].iloc[0]))
    assert img.dtype == np.uint8 and img.shape == (64, 64) and img.max() > 200 and img.min() < 80


def test_maf_and_vcf_parse_and_match_truth(cohort, truth):
    cyvcf2 = pytest.importorskip("cyvcf2", reason="cyvcf2 is a dev dependency of the project")
    maf = pd.read_csv(cohort / "genomics" / "cohort.maf", sep="\t", comment="#", dtype={"Chromosome": str})
    for col in (
        "Hugo_Symbol",
        "Chromosome",
        "Start_Position",
        "End_Position",
        "Reference_Allele",
        "Tumor_Seq_Allele2",
        "Variant_Classification",
        "Variant_Type",
        "HGVSp_Short",
        "Tumor_Sample_Barcode",
        "t_ref_count",
        "t_alt_count",
        "NCBI_Build",
    ):
        assert col in maf.columns, col
    sample_map = pd.read_csv(cohort / "genomics" / "sample_map.csv", dtype=str)
    seq = truth[truth["has_genomics"]]
    assert dict(zip(sample_map["sample_id"], sample_map["patient_id"], strict=True)) == dict(
        zip(seq["sample_id"], seq["mrn"], strict=True)
    )
    assert set(maf["Tumor_Sample_Barcode"]) == set(seq["sample_id"])
    egfr = seq[seq["egfr"]]
    for sample in egfr["sample_id"]:
        assert "EGFR" in set(maf.loc[maf["Tumor_Sample_Barcode"] == sample, "Hugo_Symbol"])
    vcfs = sorted((cohort / "genomics" / "vcf").glob("*.vcf"))
    assert {v.stem for v in vcfs} == set(truth.loc[truth["has_vcf"], "sample_id"])
    for path in vcfs:
        reader = cyvcf2.VCF(str(path))
        assert reader.samples == ["TUMOR", "NORMAL"]
        records = list(reader)
        assert len(records) == (maf["Tumor_Sample_Barcode"] == path.stem).sum()
        for rec in records:
            assert len(rec.INFO["ANN"].split("|")) == 16
            ad = rec.format("AD")
            assert ad.shape == (2, 2) and ad[0, 1] >= 5
            assert rec.format("DP")[0, 0] == ad[0].sum()


def test_ingested_tmb_is_on_the_truths_scale_with_the_cohorts_panel(cohort, truth, tmp_path):
    from ingest.lake import Lake
    from ingest.variants.pipeline import ingest_variants

    genomics = cohort / "genomics"
    lake = Lake(tmp_path / "lake")
    ingest_variants(lake, [genomics / "cohort.maf"], sample_map=genomics / "sample_map.csv",
                    gene_panel=genomics / "gene_panel.yaml")
    burden = lake.read("tmb").to_pandas().set_index("sample_id")
    cancer = truth[truth["has_genomics"] & (truth["diagnosis"] != "benign")].set_index("sample_id")
    assert len(cancer) >= 10
    ratio = burden.loc[cancer.index, "tmb_per_mb"] / cancer["tmb"]
    # the count is Poisson over 1.1 Mb and leaves out silent changes (22% of passengers): about 0.8 x
    assert 0.5 < ratio.median() < 1.2
    assert set(burden["panel_size_mb"]) == {1.1}


def test_missingness_censoring_and_oracle_concordance():
    from sksurv.metrics import concordance_index_censored

    t = simulate_cohort(SynthConfig(n_patients=3000, seed=7), np.random.default_rng(7))
    assert abs(t["has_image"].mean() - 0.85) < 0.03
    assert abs(t["has_genomics"].mean() - 0.8) < 0.03
    assert abs(t.loc[t["has_genomics"], "has_vcf"].mean() - 0.3) < 0.04
    assert 0.25 < 1 - t["os_event"].mean() < 0.45
    assert t.loc[t["diagnosis"] == "benign", "treatment"].eq("none").all()

    def cindex(col: str) -> float:
        return concordance_index_censored(
            t["os_event"].to_numpy(), t["os_time"].to_numpy(), t[col].to_numpy()
        )[0]

    oracle = cindex("log_hazard")
    assert 0.75 <= oracle <= 0.87
    for part in ("image", "genomics", "ehr", "treatment"):
        assert 0.55 < cindex(f"log_hazard_{part}") <= oracle - 0.05, part
    # confounding: EGFR-mutant patients mostly get the EGFR inhibitor, which works for them
    egfr = t[t["egfr"]]
    assert (egfr["treatment"] == "egfr_tki").mean() > 0.7
    assert egfr["response_prob_egfr_tki"].mean() > egfr["response_prob_chemo"].mean() + 0.2


def test_image_carries_aggressiveness():
    geo = Geometry(64, 12, 4.0, 5.0)
    lung = _anatomy(geo) < -700

    def stats(aggr: float) -> tuple[float, float]:
        rng = np.random.default_rng(3)
        counts, spreads = [], []
        for _ in range(12):
            hu, _ = ct_volume(geo, rng, size_mm=30.0, aggressiveness=aggr, malignant=True)
            counts.append((lung & (hu > -600)).sum())  # nodule + spicules inside the lungs
            spreads.append(hu[lung & (hu > -50)].std())  # texture of the solid part
        return float(np.mean(counts)), float(np.mean(spreads))

    calm, wild = stats(-2.0), stats(2.0)
    assert wild[0] > 1.4 * calm[0]  # spicules and lobulation
    assert wild[1] > 1.5 * calm[1]  # heterogeneous texture


def test_refuses_non_empty_out_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_cohort(out, SynthConfig(n_patients=3))

    def boom(done: int, total: int) -> None:
        if done > 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        generate_cohort(out, SynthConfig(n_patients=5), boom, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    generate_cohort(out, SynthConfig(n_patients=3, png=False), overwrite=True)
    assert not (out / "keep.txt").exists() and not (out / "png").exists()
    assert (out / "truth.parquet").exists()


def test_cli_synth_prints_summary_and_refuses_non_empty(tmp_path):
    from apps.cli.synth import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer from collapsing the app into `synth`
        pass

    out = tmp_path / "cli"
    runner = CliRunner()
    result = runner.invoke(
        app, ["synth", str(out), "--patients", "4", "--seed", "2", "--no-png", "--image-missing-rate", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "resources: Observation" in result.output and "deaths" in result.output
    assert f"--gene-panel {out / 'genomics' / 'gene_panel.yaml'}" in result.output  # the assay's TMB territory
    assert (out / "fhir" / "Patient.ndjson").exists() and not (out / "png").exists()
    again = runner.invoke(app, ["synth", str(out), "--patients", "4"])
    assert again.exit_code == 1


def test_ingest_cohort_loads_every_modality_and_rejects_an_unknown_image_kind(cohort, truth, tmp_path):
    from ingest.lake import Lake
    from ingest.reader import read_patients
    from ingest.synth.load import ingest_cohort

    lake = Lake(tmp_path / "lake")
    with pytest.raises(ValueError, match="images='nifti'"):
        ingest_cohort(cohort, lake, images="nifti")
    summary = ingest_cohort(cohort, lake, images="dicom")
    assert summary["fhir"].rejected == 0
    assert len(read_patients(lake)) == len(truth)
    assert summary["variants"]["samples"] == int(truth["has_genomics"].sum())
    assert summary["images"]["images"] == int(truth["has_image"].sum())


def test_cohorts_of_two_seeds_share_one_lake_without_colliding_samples(cohort, truth, tmp_path):
    """Sample ids were SMP-000001, SMP-000002, ... for every seed: a second cohort's samples took the first
    one's ids, and ingesting it replaced the first cohort's variants. They differ per seed, as patient ids do."""
    from ingest.lake import Lake
    from ingest.synth.load import ingest_cohort

    other = _cohort(tmp_path, seed=1, png=False)
    other_truth = pd.read_parquet(other / "truth.parquet")
    for key in ("patient_id", "sample_id"):
        assert not set(truth[key].dropna()) & set(other_truth[key].dropna()), key
    assert truth["sample_id"].dropna().str.startswith("SMP-").all()
    lake = Lake(tmp_path / "lake")
    for folder in (cohort, other):
        ingest_cohort(folder, lake, images=None)
    variants = lake.read("variants").to_pandas()
    n_rows = sum(len(pd.read_csv(c / "genomics" / "cohort.maf", sep="\t", comment="#")) for c in (cohort, other))
    assert len(variants) == n_rows
    assert variants["sample_id"].nunique() == truth["has_genomics"].sum() + other_truth["has_genomics"].sum()
