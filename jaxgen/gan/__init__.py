"""Style GANs: StyleGAN2 (Karras et al. 2020) in pure JAX. Layers in `jaxgen.gan.layers`, the hyperparameters and
networks in `jaxgen.gan.networks`, losses and pure training-step functions in `jaxgen.gan.training`, the family
(sampling, evaluation, figures, projector) in `jaxgen.gan.stylegan2`."""
from jaxgen.gan.layers import (EqualConv, EqualDense, ModulatedConv, SynthesisLayer, ToRGB, bias_act,
                               downsample2d, minibatch_stddev, modulated_conv2d, setup_filter, upfirdn2d,
                               upsample2d)
