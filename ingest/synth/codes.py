"""Terminology used by the synthetic cohort: code systems, codes, displays and UCUM units."""

from __future__ import annotations

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
AJCC = "http://cancerstaging.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
MRN_SYSTEM = "http://hospital.example.org/mrn"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MCODE_SD = "http://hl7.org/fhir/us/mcode/StructureDefinition/"

DIAGNOSES = ("benign", "adenocarcinoma", "squamous")
DIAGNOSIS_SNOMED = {
    "benign": ("427359005", "Solitary nodule of lung (disorder)"),
    "adenocarcinoma": ("35917007", "Adenocarcinoma of lung (disorder)"),
    "squamous": ("254634000", "Squamous cell carcinoma of lung (disorder)"),
}

COMORBIDITIES = {  # name -> (SNOMED code, display)
    "copd": ("13645005", "Chronic obstructive lung disease (disorder)"),
    "diabetes": ("44054006", "Diabetes mellitus type 2 (disorder)"),
    "hypertension": ("59621000", "Essential hypertension (disorder)"),
    "heart_failure": ("84114007", "Heart failure (disorder)"),
    "ckd": ("709044004", "Chronic kidney disease (disorder)"),
}

# name -> (LOINC, display, UCUM unit)
LABS = {
    "ldh": ("2532-0", "Lactate dehydrogenase [Enzymatic activity/volume] in Serum or Plasma", "U/L"),
    "cea": ("2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma", "ng/mL"),
    "albumin": ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL"),
    "hemoglobin": ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL"),
    "crp": ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L"),
    "creatinine": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL"),
    "wbc": ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL"),
    "platelets": ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL"),
}

SMOKING_LOINC = ("72166-2", "Tobacco smoking status")
SMOKING_SNOMED = {
    "never": ("266919005", "Never smoked tobacco (finding)"),
    "former": ("8517006", "Ex-smoker (finding)"),
    "current": ("449868002", "Smokes tobacco daily (finding)"),  # 77176002 Smoker: current status unknown
}
ECOG_LOINC = ("89247-1", "ECOG Performance Status score")
STAGE_LOINC = ("21908-9", "Stage group.clinical Cancer")
STAGES = ("I", "II", "III", "IV")
STAGE_SUBGROUPS = {"I": ("1A", "1B"), "II": ("2A", "2B"), "III": ("3A", "3B"), "IV": ("4A", "4B")}

DISEASE_STATUS_LOINC = ("97509-4", "Cancer disease progression")
DISEASE_STATUS = {
    "improved": ("268910001", "Patient's condition improved (finding)"),
    "stable": ("359746009", "Patient's condition stable (finding)"),
    "progressing": ("271299001", "Patient's condition worsened (finding)"),
}
RECIST_LOINC = ("21976-6", "Best overall response to treatment (RECIST)")
RECIST = {  # category -> (NCIt code, display)
    "CR": ("C4870", "Complete Response"),
    "PR": ("C18213", "Partial Response"),
    "SD": ("C18058", "Stable Disease"),
    "PD": ("C35571", "Progressive Disease"),
}

TREATMENTS = ("chemo", "egfr_tki", "immunotherapy")
# What a clinician calls each treatment class (the names above are keys of configs, runs and predictions)
TREATMENT_LABELS = {"chemo": "chemotherapy", "egfr_tki": "EGFR TKI", "immunotherapy": "immunotherapy"}
DRUGS = {  # RxNorm ingredient -> display
    "40048": "carboplatin",
    "68446": "pemetrexed",
    "2555": "cisplatin",
    "12574": "gemcitabine",
    "1721560": "osimertinib",
    "1547545": "pembrolizumab",
}
REGIMENS = {  # (treatment, diagnosis) -> RxNorm codes ordered together
    ("chemo", "adenocarcinoma"): ("40048", "68446"),
    ("chemo", "squamous"): ("2555", "12574"),
    ("egfr_tki", "adenocarcinoma"): ("1721560",),
    ("egfr_tki", "squamous"): ("1721560",),
    ("immunotherapy", "adenocarcinoma"): ("1547545",),
    ("immunotherapy", "squamous"): ("1547545",),
}

PROCEDURES = {
    "ct": ("169069000", "Computed tomography of chest (procedure)"),
    "biopsy": ("78603008", "Biopsy of lung (procedure)"),
}
ENCOUNTER_TYPES = {
    "lab": ("185349003", "Encounter for check up (procedure)"),
    "diagnosis": ("185347001", "Encounter for problem (procedure)"),
    "treatment": ("698314001", "Consultation for treatment (procedure)"),
    "followup": ("390906007", "Follow-up encounter (procedure)"),
}
