"""Official-code fixtures for jaxgen.convert.stylegan2 (tests/convert/test_stylegan2*.py).

Official code: NVlabs/stylegan2-ada-pytorch, commit d72cc7d041b42ec8e806021a205ed9349f87c6a4 (its networks run on
CPU through the reference implementations of bias_act / upfirdn2d / conv2d_resample: their `_init()` is only
called for CUDA tensors). Command (from the jaxgen repository root, the official tree unpacked in OFFICIAL):

  git --git-dir=<mirror of NVlabs/stylegan2-ada-pytorch> archive d72cc7d | tar -x -C OFFICIAL
  /work/torchenv/bin/python tests/reference/stylegan2/make_fixture.py --official=OFFICIAL

For two small models with perturbed random weights (seeded) it writes, next to this file:
  NAME.pkl       the network pickle exactly as the official training loop writes it (`training_loop.py`
                 snapshot_data: G, D, G_ema, augment_pipe, training_set_kwargs; persistence classes);
  NAME.npz/json  what `jaxgen.convert.stylegan2.read` returns for that pickle: each network's state_dict
                 ("G/mapping.fc0.weight", ...) and init_kwargs, plus training_set_kwargs (so CI needs no torch);
  NAME_out.npz   inputs and the official outputs (float32, images NHWC): ws, truncated ws, G_ema and G images
                 with noise_mode='const', D logits.
NAME: "uncond" (16x16x3, D resnet, no clamp) and "cond" (32x32x1, 4 classes, D orig, conv_clamp 0.5, D mapping
with 1 layer and lr multiplier 0.1 where G's has 2 layers and 0.01, cmap_dim 8, minibatch-stddev 2 channels).
"""
import argparse
import copy
import json
import os
import pickle
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
B = 4

MODELS = {
    "uncond": dict(
        G=dict(z_dim=12, w_dim=16, c_dim=0, img_resolution=16, img_channels=3,
               mapping_kwargs=dict(num_layers=2),
               synthesis_kwargs=dict(channel_base=128, channel_max=8, num_fp16_res=0, conv_clamp=None)),
        D=dict(c_dim=0, img_resolution=16, img_channels=3, architecture="resnet", channel_base=128, channel_max=8,
               num_fp16_res=0, conv_clamp=None, block_kwargs={}, mapping_kwargs={},
               epilogue_kwargs=dict(mbstd_group_size=2)),
        training_set=dict(path="~/datasets/tiny16.zip", use_labels=False, resolution=16)),
    "cond": dict(
        G=dict(z_dim=12, w_dim=16, c_dim=4, img_resolution=32, img_channels=1,
               mapping_kwargs=dict(num_layers=2, lr_multiplier=0.01),
               synthesis_kwargs=dict(channel_base=256, channel_max=8, num_fp16_res=0, conv_clamp=0.5)),
        D=dict(c_dim=4, img_resolution=32, img_channels=1, architecture="orig", channel_base=256, channel_max=8,
               num_fp16_res=0, conv_clamp=0.5, cmap_dim=8, block_kwargs={},
               mapping_kwargs=dict(num_layers=1, lr_multiplier=0.1),
               epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=2)),
        training_set=dict(path="~/datasets/cifar10.zip", use_labels=True, resolution=32)),
}


def perturb(module, torch, scale):
  """Every parameter + scale * N(0, 1) (biases, noise strengths, affine biases leave their init values); w_avg
  random (so truncation moves something)."""
  with torch.no_grad():
    for p in module.parameters():
      p.add_(scale * torch.randn_like(p))
    for name, b in module.named_buffers():
      if name.endswith("w_avg"):
        b.copy_(0.5 * torch.randn_like(b))


def clamped_fraction(g, z, c, clamp, torch):
  """The fraction of the synthesis layers' and toRGBs' outputs that sit at +-clamp."""
  counts = []
  hooks = [m.register_forward_hook(lambda m, i, o: counts.append(
      ((o.abs() >= clamp * (1 - 1e-6)).sum().item(), o.numel())))
      for n, m in g.synthesis.named_modules() if n.endswith(("conv0", "conv1", "torgb"))]
  with torch.no_grad():
    g(z, c, truncation_psi=0.7, noise_mode="const")
  for h in hooks:
    h.remove()
  return sum(a for a, _ in counts) / sum(b for _, b in counts)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--official", required=True, help="unpacked NVlabs/stylegan2-ada-pytorch tree")
  args = parser.parse_args()
  sys.path.insert(0, args.official)
  import legacy
  import torch
  from training import networks

  for seed, (name, spec) in enumerate(MODELS.items()):
    torch.manual_seed(seed)
    G = networks.Generator(**copy.deepcopy(spec["G"])).train().requires_grad_(False)
    D = networks.Discriminator(**copy.deepcopy(spec["D"])).train().requires_grad_(False)
    perturb(G, torch, 0.3)
    perturb(D, torch, 0.3)
    G_ema = copy.deepcopy(G).eval()
    perturb(G_ema, torch, 0.1)  # G_ema differs from G; buffers (noise_const) stay shared, as in training
    training_set_kwargs = dict(class_name="training.dataset.ImageFolderDataset", max_size=None, xflip=False,
                               **spec["training_set"])
    # As training_loop.py writes a snapshot.
    snapshot = dict(training_set_kwargs=dict(training_set_kwargs))
    for key, module in (("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", None)):
      if module is not None:
        module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
      snapshot[key] = module
    pkl = os.path.join(HERE, f"{name}.pkl")
    with open(pkl, "wb") as f:
      pickle.dump(snapshot, f)

    # Outputs from the pickle as the official tools load it.
    with open(pkl, "rb") as f:
      data = legacy.load_network_pkl(f)
    g_ema, g, d = data["G_ema"], data["G"], data["D"]
    gen = torch.Generator().manual_seed(100 + seed)
    z = torch.randn([B, g.z_dim], generator=gen)
    labels = torch.arange(B) % max(g.c_dim, 1)
    c = torch.nn.functional.one_hot(labels, g.c_dim).float() if g.c_dim else torch.zeros([B, 0])
    x = torch.rand([B, d.img_channels, d.img_resolution, d.img_resolution], generator=gen) * 2 - 1
    with torch.no_grad():
      out = dict(
          z=z, labels=labels, d_input=x,
          ws=g_ema.mapping(z, c),
          ws_psi07=g_ema.mapping(z, c, truncation_psi=0.7),
          ws_psi05_cutoff2=g_ema.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2),
          img_ema_psi07=g_ema(z, c, truncation_psi=0.7, noise_mode="const"),
          img_g=g(z, c, noise_mode="const"),
          d_logits=d(x, c)[:, 0],
          d_logits_fake=d(g_ema(z, c, noise_mode="const"), c)[:, 0])
    out = {k: v.numpy() for k, v in out.items()}
    for k in ("d_input", "img_ema_psi07", "img_g"):
      out[k] = out[k].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    np.savez(os.path.join(HERE, f"{name}_out.npz"), **{k: v.astype(np.float32 if v.dtype.kind == "f" else np.int32)
                                                       for k, v in out.items()})
    clamp = spec["G"]["synthesis_kwargs"]["conv_clamp"]
    if clamp is not None:  # the clamp must bite, but not everywhere
      print(name, "fraction of G_ema layer outputs at the clamp:", clamped_fraction(g_ema, z, c, clamp, torch))
    print(name, "image range", out["img_ema_psi07"].min(), out["img_ema_psi07"].max(), "logits", out["d_logits"])

    # What `read` returns: state dicts and init_kwargs.
    arrays, settings = {}, {"training_set_kwargs": data["training_set_kwargs"]}
    for key in ("G", "D", "G_ema"):
      arrays |= {f"{key}/{k}": v.numpy().astype(np.float32) for k, v in data[key].state_dict().items()}
      settings[key] = json.loads(json.dumps(dict(data[key].init_kwargs)))
    np.savez(os.path.join(HERE, f"{name}.npz"), **arrays)
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
      json.dump(settings, f, indent=1, sort_keys=True)
    print(name, {k: os.path.getsize(os.path.join(HERE, k)) for k in os.listdir(HERE) if k.startswith(name)})


if __name__ == "__main__":
  main()
