"""Autoregressive family: locally masked convolutions in any generation order (Jain, Abbeel & Pathak 2020)
on a PixelCNN++ backbone (Salimans et al. 2017).

- `orders`: generation orders over H x W (raster, S-curve, generalised Hilbert and their 8 symmetries).
- `masked_conv`: per-location kernel masks for an order and the locally masked 2-D convolution.
- `lmconv`: the PixelCNN++-style `Model` with log_prob / losses / sample / complete.
"""
