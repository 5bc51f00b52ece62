# generic beta-VAE rules (train_vae, encode_expression) shared by RNA-GAN and RNA-CDM
