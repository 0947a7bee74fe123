"""A compiled FHIRPath subset: what SQL-on-FHIR v2 ViewDefinitions need, over plain JSON resources.

An expression is parsed once into a small tree and then compiled into nested Python closures, so evaluating it
on a resource never re-parses. Every compiled expression is an :data:`Evaluator`
``fn(collection: list, row_index: int) -> list``: FHIRPath collections are Python lists, primitives are
``str``/``int``/``float``/``bool``, complex values are the JSON ``dict``s themselves.

Supported: member paths (with choice types ``value.ofType(Quantity)`` -> ``valueQuantity``), indexers,
``$this``, ``%constants`` and ``%rowIndex``, literals (string, number, boolean, ``{}``, ``@date``), the
operators ``. [] + - * / div mod & | = != ~ !~ < <= > >= in contains and or xor implies is as``, and the
functions ``where select repeat exists all empty first last tail skip take single count distinct not iif join
ofType is as extension getResourceKey getReferenceKey hasValue lowBoundary highBoundary`` plus the string
functions ``startsWith endsWith contains matches replaceMatches replace substring indexOf lower upper trim
length split toString toInteger toDecimal``. Types are inferred from the JSON (no StructureDefinitions);
``ofType``, ``is`` and ``as`` keep the types FHIR R4 derives from the type named (:data:`SUBTYPES`:
``onset.ofType(Quantity)`` reads ``onsetAge``, ``ofType(string)`` a ``valueCode``).
Two dates, date-times or times (FHIR text or ``@`` literals) compare by what they denote, precision by
precision (N1 6.1.1): offsets are normalised to UTC (no offset: UTC), and a precision one lacks that the
other has gives empty (``birthDate < @2020-06-01`` on ``2020``); other text compares as text. ``in``,
``contains``, ``distinct()``, ``|`` and ``=`` on collections use that equality item by item.

One job a module:

* :mod:`ingest.fhir.fhirpath.parser`: tokenizer and parser, text -> tree (:func:`parse`);
* :mod:`ingest.fhir.fhirpath.errors`: :class:`FhirPathError`;
* :mod:`ingest.fhir.fhirpath.fhir_types`: choice elements, type names, the R4 type hierarchy, type tests;
* :mod:`ingest.fhir.fhirpath.values`: collections and values (:data:`Evaluator`), equality, singletons, numbers;
* :mod:`ingest.fhir.fhirpath.temporal`: dates, date-times and times compared by what they denote;
* :mod:`ingest.fhir.fhirpath.references`: :func:`reference_key`;
* :mod:`ingest.fhir.fhirpath.boundaries`: ``lowBoundary()`` / ``highBoundary()``;
* :mod:`ingest.fhir.fhirpath.compiler`: tree -> closures (:func:`compile_path`, :func:`evaluate`);
* :mod:`ingest.fhir.fhirpath.operators`: logical, comparison and arithmetic operators;
* :mod:`ingest.fhir.fhirpath.functions`: the function builders;
* :mod:`ingest.fhir.fhirpath.scalar`: the scalar fast path of view columns (:func:`compile_scalar`, :data:`SLOW`);
* :mod:`ingest.fhir.fhirpath.filters`: the fast path of ``where`` filters (:func:`compile_filter`);
* :mod:`ingest.fhir.fhirpath.inference`: the result type of a path (:func:`result_type`).
"""

from ingest.fhir.fhirpath.compiler import compile_path, evaluate
from ingest.fhir.fhirpath.errors import FhirPathError
from ingest.fhir.fhirpath.fhir_types import CHOICE_NAMES, CHOICE_TYPES, SUBTYPES, choice_keys, is_type
from ingest.fhir.fhirpath.filters import compile_filter
from ingest.fhir.fhirpath.inference import result_type
from ingest.fhir.fhirpath.parser import parse
from ingest.fhir.fhirpath.references import reference_key
from ingest.fhir.fhirpath.scalar import SLOW, chain_ops, compile_scalar, generated_code, op_lines, scalar_chains
from ingest.fhir.fhirpath.values import Evaluator

__all__ = ["CHOICE_NAMES", "CHOICE_TYPES", "SLOW", "SUBTYPES", "Evaluator", "FhirPathError", "chain_ops",
           "choice_keys", "compile_filter", "compile_path", "compile_scalar", "evaluate", "generated_code",
           "is_type", "op_lines", "parse", "reference_key", "result_type", "scalar_chains"]
