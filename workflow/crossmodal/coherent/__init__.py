"""Coherent Denoising (Marchesi et al., PLoS Comput Biol 2026): any-omics -> any-omics
generation with MLP diffusion models on 32-d per-modality latents, a multi-condition model
and the Coherent Denoising ensemble of single-condition models.

Modules: :mod:`.preprocess` (Methods "Preprocessing"), :mod:`.latents` (Methods
"Autoencoder embedding"), :mod:`.ensemble` (Methods "Coherent Denoising"), :mod:`.evaluate`
(Results, Table 1) and :mod:`.steps` (the pipeline steps).
"""
