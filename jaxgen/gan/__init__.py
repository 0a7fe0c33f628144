"""Style GANs: StyleGAN2 (Karras et al. 2020) in pure JAX. Layers in `jaxgen.gan.layers`, the hyperparameters and
networks in `jaxgen.gan.networks`, losses and pure training-step functions in `jaxgen.gan.training`, the family
(sampling, evaluation, figures, projector) in `jaxgen.gan.stylegan2`."""
