"""Posterior sampling of network weights: SGLD, RMSprop-SGLD and SGHMC over many chains.

``sample`` runs all chains together (vmapped over a ``(chain, param)`` weight matrix) and
returns an ``xarray.DataTree`` in devinterp's layout; :mod:`torchlangevin.slt` turns it into
local learning coefficients, susceptibilities and influence functions.
"""

from .masks import create_param_masks
from .optim import SGHMC, SGLD, Hyper, RMSpropSGLD, sgmcmc_update_
from .sampler import chain_seeds, default_n_beta, sample

__all__ = ["sample", "SGLD", "RMSpropSGLD", "SGHMC", "Hyper", "sgmcmc_update_",
           "default_n_beta", "chain_seeds", "create_param_masks"]
