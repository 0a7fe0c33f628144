"""Hierarchical VAEs: NVAE (Vahdat & Kautz 2020). `nvae.Model` is the model; `cells`, `spectral`, `optim` its parts."""
