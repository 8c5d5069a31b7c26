"""Synthetic tabular data by Langevin sampling of a learned energy (``TabularGenerator``)."""

from . import constraints
from .constraints import (
    Custom,
    FixedCombinations,
    FixedIncrements,
    Formula,
    Inequality,
    Range,
)
from .encoding import TableEncoder, detect_metadata
from .generator import (
    TabularGenerator,
    balance_dataset,
    generate_classification,
    generate_regression,
)
from .report import quality_report

__all__ = ["TabularGenerator", "TableEncoder", "detect_metadata", "generate_classification",
           "generate_regression", "balance_dataset", "quality_report", "constraints",
           "Inequality", "Range", "FixedCombinations", "FixedIncrements", "Formula", "Custom"]
