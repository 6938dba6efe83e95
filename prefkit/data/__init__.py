"""Preference data: schema and validation, loading, pair generation, judges, vote store, export to TRL formats."""

from .validation import PreferenceDataError, RowProblem, validate_preference_dataset

__all__ = ["PreferenceDataError", "RowProblem", "validate_preference_dataset"]
