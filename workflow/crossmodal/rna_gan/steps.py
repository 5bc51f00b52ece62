"""Import every RNA-GAN module that registers pipeline steps (listed in crossmodal.steps)."""
from crossmodal.models import vae  # noqa: F401  train_vae, encode_expression
from crossmodal.rna_gan import convergence, evaluate, generators, latent, reproduction, simclr  # noqa: F401
