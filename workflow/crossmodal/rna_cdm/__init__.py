"""RNA-CDM (Carrillo-Perez et al., "RNA-to-image multi-cancer synthesis using cascaded
diffusion models"): a 64 px base U-Net and a 64->256 super-resolution U-Net, both conditioned
on the beta-VAE expression latent, trained with EDM and sampled with the Karras sampler.

* :mod:`crossmodal.rna_cdm.cascade` -- building the U-Nets from config, training data,
  the (resumable, accelerate-launched) training loop shared by both stages, cascade sampling;
* :mod:`crossmodal.rna_cdm.steps` -- the pipeline steps (``train_rna_cdm``,
  ``generate_rna_cdm_tiles`` with its per-patient / per-cancer-type tile budget,
  ``evaluate_rna_cdm``, ``plot_rna_cdm_tiles``, the sampler benchmark, the reproduction table);
* :mod:`crossmodal.rna_cdm.deconvolution` -- bulk deconvolution (open ν-SVR / NNLS stand-in
  for CIBERSORTx) vs cells counted in generated tiles, and tiles generated from
  class-attributable expression (Supplementary Figures 3 and 4);
* :mod:`crossmodal.rna_cdm.downstream` -- cancer-type classifiers with synthetic replacement /
  pretraining (Figure 4) and SimCLR on synthetic tiles for a binary task (Supplementary Figure 5);
* :mod:`crossmodal.rna_cdm.vae_figure` -- the β-VAE UMAP of the test patients' expression and
  its reconstruction by cancer type (Figure 2);
* :mod:`crossmodal.rna_cdm.targets` -- input functions and the default targets of
  ``workflow/rules/rna_cdm.smk``.

The diffusion core is :mod:`crossmodal.models.diffusion` and the network
:mod:`crossmodal.models.unet`; the code of the paper is not public, so the paper is the spec.
"""
