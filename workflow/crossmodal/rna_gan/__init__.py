"""RNA-GAN reproduction (Carrillo-Perez et al., Cell Reports Methods 2023).

Modules: ``latent`` (Figure 2 latent-space experiments), ``generators`` (GAN / RNA-GAN /
control training and tile generation), ``evaluate`` (tile UMAPs, FID, external-cohort
classifier, Figure 5, SimCLR), ``reproduction`` (the claims table), ``targets`` (rule
helpers).  ``crossmodal.rna_gan.steps`` imports them all so their steps register.
"""
