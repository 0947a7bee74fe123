"""The one exception of the FHIRPath subset: an expression that fails to parse, to compile or on its data."""


class FhirPathError(ValueError):
    """An expression that cannot be parsed or compiled, or that fails on the data it is applied to."""
