"""Synthetic tabular data by Langevin sampling of a learned energy (``TabularGenerator``)."""

from .encoding import TableEncoder
from .generator import (
    TabularGenerator,
    balance_dataset,
    generate_classification,
    generate_regression,
)
from .report import quality_report

__all__ = ["TabularGenerator", "TableEncoder", "generate_classification",
           "generate_regression", "balance_dataset", "quality_report"]
