"""Score-based generative modelling: noise-conditional score models trained by denoising or
sliced score matching over a ladder of noise levels, sampled by annealed Langevin dynamics
(NCSN, Song & Ermon 2019) or a predictor-corrector sampler (Song et al. 2021)."""

from .losses import draw_sigmas, dsm_loss, ssm_loss
from .models import (
    MixtureScore,
    NoiseConditionalEnergy,
    ScoreMLP,
    geometric_sigmas,
    noise_ladder,
)
from .sampling import (
    ScoreField,
    ScoreSamples,
    annealed_langevin,
    annealed_mala,
    predictor_corrector,
)
from .train import ScoreHistory, fit_score

__all__ = ["ScoreMLP", "NoiseConditionalEnergy", "MixtureScore", "geometric_sigmas",
           "noise_ladder", "dsm_loss", "ssm_loss", "draw_sigmas", "fit_score", "ScoreHistory",
           "annealed_langevin", "annealed_mala", "predictor_corrector", "ScoreField",
           "ScoreSamples"]
