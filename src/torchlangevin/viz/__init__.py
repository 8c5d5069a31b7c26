"""Pictures: histogram animations, density overlays, traces, energy contours.

matplotlib and imageio are imported inside the functions (extra ``viz``).
"""

from .plots import (
    histogram_animation,
    histogram_figure,
    plot_energy_contours,
    plot_llc_trajectory,
    plot_trace,
)

__all__ = ["histogram_animation", "histogram_figure", "plot_trace", "plot_energy_contours",
           "plot_llc_trajectory"]
