"""Hierarchical VAEs: NVAE (Vahdat & Kautz 2020). `nvae` holds the model and its `FAMILY`; `cells` the cells and
posterior flows, `spectral` the spectral and BatchNorm-scale regularisers. The optimiser is the shared one
(`jaxgen.training.optim`, Adamax with torch's L2 decay)."""
