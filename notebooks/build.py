"""Writes the notebooks of this folder from the cells below (outputs are never stored): python notebooks/build.py

Every notebook installs jaxgen in its first cell (skipped where jaxgen is already importable, as in CI), trains a
quickstart on the bundled digits with the shared trainer, plots its curves and draws the family's figures inline.
With JAXGEN_NOTEBOOK_FAST=1 (tests/test_notebooks.py) each runs the configs' :smoke sizes for 2 steps.
"""
import os
import textwrap

import nbformat

REPO = "jaxgen/jaxgen"  # GitHub owner/name (a placeholder until the repository is published)
HERE = os.path.dirname(os.path.abspath(__file__))


def code(source):
  return nbformat.v4.new_code_cell(textwrap.dedent(source).strip())


def md(source):
  return nbformat.v4.new_markdown_cell(textwrap.dedent(source).strip())


def colab_url(name):
  return f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb"


def header(name, title, text):
  return md(f"# {title}\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(name)})\n\n" + textwrap.dedent(text).strip())


INSTALL = code(f"""
    # Installs jaxgen (on Colab, or wherever it is missing); where jaxgen is already importable nothing happens.
    import importlib.util

    if importlib.util.find_spec("jaxgen") is None:
      %pip install -q "jaxgen @ git+https://github.com/{REPO}"
    """)

SETUP = code("""
    import glob
    import json
    import logging
    import os
    import sys

    from IPython.display import display
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    # JAXGEN_NOTEBOOK_FAST=1 (CI): the :smoke sizes, 2 steps and tiny figures, only to check that every cell runs.
    FAST = os.environ.get("JAXGEN_NOTEBOOK_FAST", "") == "1"
    # Run directories go under ROOT. Running a notebook again resumes from the checkpoint there (delete it to restart).
    ROOT = os.environ.get("JAXGEN_NOTEBOOK_DIR", "/tmp/jaxgen_notebooks")

    logger = logging.getLogger("jaxgen")  # the trainer's progress lines, as the command line prints them
    if not logger.handlers:
      logger.addHandler(logging.StreamHandler(sys.stdout))
    logger.setLevel(logging.INFO)
    logger.propagate = False


    def show(picture, scale=2):
      \"\"\"Displays a uint8 [H, W, C] picture inline, `scale` times larger.\"\"\"
      picture = np.asarray(picture)
      image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
      display(image.resize((image.width * scale, image.height * scale), Image.NEAREST))


    def plot_curves(workdir, keys):
      \"\"\"Plots the run's metrics.jsonl entries `keys` against the training step, one panel per key.\"\"\"
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
      _, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
      for ax, key in zip(axes[0], keys):
        steps, values = zip(*[(row["step"], row[key]) for row in rows if key in row])
        ax.plot(steps, values, marker="o" if len(steps) < 10 else None)
        ax.set(title=key, xlabel="step")
      plt.tight_layout()
      plt.show()


    def last_sample_grid(workdir):
      \"\"\"The sample grid the trainer wrote at its last evaluation (DIR/samples/step_*.png).\"\"\"
      return np.asarray(Image.open(sorted(glob.glob(os.path.join(workdir, "samples", "step_*.png")))[-1]))
    """)


def published(family_name, comments, workdir_name):
  """A markdown cell and the cell that converts and loads a published checkpoint instead of training the quickstart
  (when the user sets PUBLISHED); `comments` are lines saying which files and data."""
  comments = "\n".join("# " + line for line in comments)
  return [md("## Or: a published checkpoint\nLeave `PUBLISHED` empty to train the quickstart below."), code(f"""
{comments}
# Converted once into a run directory (needs PyTorch: pip install torch); the cells below then use it.
PUBLISHED = ""  # path of the downloaded file; empty: train the quickstart instead
TFDS_DIR = None  # TFDS data_dir holding the checkpoint's dataset (None: TFDS's default)
if PUBLISHED:
  import ml_collections

  from experiments import convert

  WORKDIR = os.path.join(ROOT, "{workdir_name}")
  if not os.path.exists(os.path.join(WORKDIR, "config.json")):
    convert.run("{family_name}", PUBLISHED, WORKDIR)
  with open(os.path.join(WORKDIR, "config.json")) as f:  # the config the file records (config.py reads it too)
    config = ml_collections.ConfigDict(json.load(f))
  config.data_dir = TFDS_DIR
""")]


def train(name, body):
  """The training cell: `body` (which sets config and WORKDIR) unless a published checkpoint was loaded."""
  return code(f"from experiments.configs import {name}_quickstart\nfrom jaxgen.training import family\n"
              f"from jaxgen.training import trainer\n\n"
              f"if not PUBLISHED:  # a converted checkpoint needs no training\n"
              + textwrap.indent(textwrap.dedent(body).strip(), "  "))


def curves(keys):
  return code(f"""
      if not PUBLISHED:  # a converted checkpoint has no training curves
        plot_curves(WORKDIR, {keys!r})
        show(last_sample_grid(WORKDIR), scale=1)  # already drawn 2x
      """)


def glow():
  return [
      header("glow", "Glow: exact likelihood, temperature and interpolation", """
          A small Glow (Kingma & Dhariwal 2018: actnorm, invertible 1x1 convolutions, affine couplings, multi-scale
          with a learned prior) trained on the 10,000 MNIST digits that ship with jaxgen, through the same trainer as
          `python -m experiments.train --config=experiments/configs/glow_quickstart.py`. On a CPU runtime the whole
          notebook takes a few minutes; the quickstart's full 2,500 steps reach 1.85 bits/dim on the test digits.
          """),
      INSTALL, SETUP,
      *published("glow", ["y0ast/Glow-PyTorch's CIFAR-10 model: glow.zip from its README,",
                           "glow/glow_affine_coupling.pt (hparams.json beside it), with CIFAR-10 prepared for TFDS."],
                 "glow_published"),
      md("## Train\nA run directory gets `metrics.jsonl`, TensorBoard events, sample grids and orbax checkpoints."),
      train("glow", """
          config = glow_quickstart.get_config("smoke" if FAST else None)
          if FAST:
            config.total_steps = 2
          else:  # 600 of the quickstart's 2,500 steps
            config.total_steps, config.eval_every, config.eval_examples = 600, 200, 500
          WORKDIR = os.path.join(ROOT, "glow_fast" if FAST else "glow")
          state = trainer.train_and_evaluate(config, WORKDIR)
          """),
      md("## Training curves\nBits per dimension on the training batches and on held-out digits."),
      curves(["train/bpd", "eval/bpd", "train/grad_norm"]),
      md("""
          ## Exact inverse, temperature and interpolation
          Glow's encoder is the exact inverse of its decoder: encoding and decoding test digits gives them back.
          """),
      code("""
          s, state = trainer.restore_for_eval(config, WORKDIR)
          batch = s.input.split(s.config.eval_split).get(np.arange(8))
          reconstructed, how = s.family.reconstruct(s, state, batch["image"], batch["label"])
          print(f"{how}: largest pixel error {np.abs(reconstructed.astype(int) - batch['image']).max()} (of 255)")

          options = family.figure_options(s.family, s.config)
          if FAST:
            options.update(num=3, pairs=2, interpolation_steps=4)
          pictures = s.family.figures(s, state, seed=0, **options)
          """),
      md("""
          Samples at temperatures T (one row each, the same latents scaled by T): z ~ N(0, T^2) trades diversity for
          quality; the paper's figures use T = 0.7.
          """),
      code('print("T =", options["temperatures"])\nshow(pictures["temperatures.png"])'),
      md("Linear interpolation between the latents of two test digits (the ends are their reconstructions):"),
      code('show(pictures["interpolations.png"])'),
  ]


def nvae():
  return [
      header("nvae", "NVAE: temperatures with BatchNorm re-adjustment, importance-weighted NLL", """
          A small NVAE (Vahdat & Kautz 2020: bottom-up encoder, shared top-down decoder, latent groups over two
          scales, residual normal posteriors, KL warm-up and balancing, spectral regularisation) with a Bernoulli
          decoder on the bundled digits, dynamically binarized, trained as
          `python -m experiments.train --config=experiments/configs/nvae_quickstart.py`.
          """),
      INSTALL, SETUP,
      *published("nvae", ["NVlabs/NVAE's train.py checkpoints (its README): e.g. mnist/checkpoint.pt (binarized",
                           "MNIST, 78.01 nats), with MNIST prepared for TFDS."],
                "nvae_published"),
      md("## Train\nProgress shows the loss, the negative ELBO in bits/dim and the gradient norm."),
      train("nvae", """
          config = nvae_quickstart.get_config("smoke" if FAST else None)
          if FAST:
            config.total_steps = 2
          else:  # 250 of the quickstart's 1,000 steps; KL warm-up over the same 30% of them
            config.total_steps, config.eval_every, config.eval_examples = 250, 125, 256
            config.model.kl_anneal_steps = 75
          WORKDIR = os.path.join(ROOT, "nvae_fast" if FAST else "nvae")
          state = trainer.train_and_evaluate(config, WORKDIR)
          """),
      md("## Training curves\nThe ELBO's two parts: reconstruction and KL (in nats), and the evaluation's bound."),
      curves(["train/recon", "train/kl", "eval/nelbo_bpd", "eval/iw_nll_bpd"]),
      md("""
          ## Importance-weighted NLL
          The ELBO bounds log p(x) from below; K importance samples tighten the bound (Burda et al. 2016), as the
          paper's reported NLLs (K = 1000). `experiments.evaluate --config.iw_samples=K` does the same.
          """),
      code("""
          config.iw_samples = 2 if FAST else 20
          s, state = trainer.restore_for_eval(config, WORKDIR)
          results = trainer.evaluate_state(s, state, num_examples=16 if FAST else 256)
          nats = "nats" if s.config.binarize else "bpd"
          print(f"negative ELBO {results['nelbo_' + nats]:.2f} {nats}, IW NLL (K={s.config.iw_samples}) "
                f"{results['iw_nll_' + nats]:.2f} {nats}, active latent units {results['active_units']} of "
                f"{results['latent_units']}")
          """),
      md("""
          ## Temperature, with and without BatchNorm re-adjustment
          Sampling at T < 1 shifts the decoder's activations away from the statistics BatchNorm saw in training.
          NVAE re-estimates them from samples at each temperature (Sec. 5.2; 500 generator passes) before drawing.
          Rows: temperatures; first grid re-adjusted, second with the training statistics.
          """),
      code("""
          options = family.figure_options(s.family, s.config)
          print("T =", options["temperatures"])
          show(s.family.figures(s, state, seed=0, **options)["temperatures.png"])
          show(s.family.figures(s, state, seed=0, **options | dict(readjust_bn_iterations=0))["temperatures.png"])
          """),
  ]


def lmconv():
  return [
      header("lmconv", "LMConv: generation orders, likelihood under any order, completions", """
          Locally masked convolutions (Jain, Abbeel & Pathak 2020) on a PixelCNN++ network with discretized logistic
          mixtures, trained on the bundled digits over the 8 rotations and flips of the S-curve order, as
          `python -m experiments.train --config=experiments/configs/lmconv_quickstart.py`.
          """),
      INSTALL, SETUP,
      md("""
          ## Generation orders
          An order is the sequence in which pixels are generated; colour = step (dark first), the line follows it.
          """),
      code("""
          from jaxgen.autoregressive import orders

          names = ("raster", "s_curve", "s_curve_rot90", "s_curve_flip", "hilbert", "hilbert_rot90_flip")
          _, axes = plt.subplots(1, len(names), figsize=(2.5 * len(names), 2.8))
          for ax, name in zip(axes, names):
            order = orders.build(name, 14, 14)  # [H*W, 2] (row, col); the digits are 28x28
            ax.imshow(orders.rank_map(order, 14, 14), cmap="viridis")
            ax.plot(order[:, 1], order[:, 0], color="white", linewidth=0.8)
            ax.set(title=name, xticks=[], yticks=[])
          plt.show()
          """),
      *published("lmconv", ["ajayjain/lmconv's files (its README): e.g. grayscale_mnist_ep299_hilbert8.pth (8-bit",
                             "MNIST) or cifar_s8.pth (CIFAR-10, 2.887 bits/dim with 8 orders), with that dataset",
                             "prepared for TFDS."],
                "lmconv_published"),
      md("## Train\nEach training step draws one of the orders; evaluation scores the first and their ensemble."),
      train("lmconv", """
          config = lmconv_quickstart.get_config("smoke" if FAST else None)
          if FAST:
            config.total_steps = 2
          else:  # 300 of the quickstart's 600 steps
            config.total_steps, config.eval_every, config.eval_examples = 300, 150, 128
          WORKDIR = os.path.join(ROOT, "lmconv_fast" if FAST else "lmconv")
          state = trainer.train_and_evaluate(config, WORKDIR)
          """),
      md("## Training curves"),
      curves(["train/bpd", "eval/bpd", "eval/bpd_ensemble"]),
      md("""
          ## Exact likelihood under every order
          One network gives log p(x) exactly under each order it was trained on; averaging the probabilities over
          orders (an ensemble) scores better than any one of them.
          """),
      code("""
          import jax

          from jaxgen.training import steps

          s, state = trainer.restore_for_eval(config, WORKDIR)
          images = s.input.examples(s.config.eval_split, 8 if FAST else 64)  # uint8 [N, H, W, C]
          variables = steps.eval_variables(state)
          log_probs = np.stack([s.model.apply(variables, images, name, method="log_prob")
                                for name in s.model.eval_orders])  # [orders, N] in nats
          bpd = lambda lp: -np.mean(lp) / (np.prod(images.shape[1:]) * np.log(2.0))
          for name, lp in zip(s.model.eval_orders, log_probs):
            print(f"{name:>20}: {bpd(lp):.3f} bits/dim")
          ensemble = jax.nn.logsumexp(log_probs, axis=0) - np.log(len(log_probs))
          print(f"{'ensemble':>20}: {bpd(ensemble):.3f} bits/dim")
          """),
      md("""
          ## Samples and completions
          A completion samples the hidden pixels given the observed ones exactly, under an order that visits the
          observed pixels first. Each row: the observed part (hidden region grey), samples, the original.
          """),
      code("""
          options = family.figure_options(s.family, s.config)
          if FAST:
            options.update(num=2, completions=1, complete_images=2)
          pictures = s.family.figures(s, state, seed=0, **options)
          show(pictures["temperatures.png"])
          show(pictures["completions.png"])
          """),
  ]


def stylegan2():
  return [
      header("stylegan2", "StyleGAN2: truncation and style mixing", """
          A narrow StyleGAN2 (Karras et al. 2020: mapping network, modulated convolutions, noise inputs, skip
          generator, residual discriminator, lazy R1 and path-length regularisation, generator EMA) with DiffAugment
          on the bundled digits, trained as
          `python -m experiments.train --config=experiments/configs/stylegan2_quickstart.py`. Its evaluation is FID
          in the features of a small digit classifier trained once (offline; not comparable with Inception FIDs).
          """),
      INSTALL, SETUP,
      *published("stylegan2", ["stylegan2-ada-pytorch's pickles (its README): e.g. cifar10.pkl (class-conditional,",
                                "FID 2.42), with CIFAR-10 prepared for TFDS."],
                "stylegan2_published"),
      md("## Train\nProgress shows the generator's and discriminator's losses."),
      train("stylegan2", """
          config = stylegan2_quickstart.get_config("smoke" if FAST else None)
          if FAST:
            config.total_steps = 2
          else:  # 500 of the quickstart's 3,000 steps; FID of 500 samples, a classifier trained for 200 steps
            config.total_steps, config.eval_every, config.eval_examples = 500, 250, 500
            config.sample_metrics = dict(num_samples=500, classifier_steps=200)
          WORKDIR = os.path.join(ROOT, "stylegan2_fast" if FAST else "stylegan2")
          state = trainer.train_and_evaluate(config, WORKDIR)
          """),
      md("## Training curves"),
      curves(["train/g_loss", "train/d_loss", "eval/fid"]),
      md("""
          ## Truncation
          w = w_avg + psi (w - w_avg): psi = 0 is the average image, psi = 1 the untruncated samples. One row per
          psi, the same z in every row.
          """),
      code("""
          s, state = trainer.restore_for_eval(config, WORKDIR)
          options = family.figure_options(s.family, s.config)
          if FAST:
            options.update(psis=(0.0, 1.0), num=2, mix=2)
          pictures = s.family.figures(s, state, seed=0, **options)
          print("psi =", options["psis"])
          show(pictures["truncation.png"])
          """),
      md("""
          ## Style mixing
          The top row and left column are sources; each cell is its row's image with the coarse (first half) or
          fine (second half) layers' styles taken from its column's.
          """),
      code('show(pictures["style_mixing_coarse.png"])\nshow(pictures["style_mixing_fine.png"])'),
  ]


def compare():
  return [
      header("compare", "Comparing the families on the same digits", """
          The four quickstarts trained for the same budget of training images, then measured the same way by
          `jaxgen.metrics.comparison` (as `python -m experiments.compare`): bits/dim where a model has a likelihood,
          FID / KID / precision / recall against one reference set in one feature space, reconstruction through
          the latents, completion of the hidden top half, sampling time. "none" marks what a family cannot do.
          NVAE models the 8-bit digits here (not binarized), as the others do.
          """),
      INSTALL, SETUP,
      md("## Train the four for the same number of images"),
      code("""
          import importlib

          from jaxgen.metrics import comparison

          # Fast mode (CI) compares two smoke runs only; tests/experiments/test_compare.py covers every family.
          NAMES = ("glow", "nvae") if FAST else ("glow", "nvae", "lmconv", "stylegan2")
          configs = []
          for name in NAMES:
            module = importlib.import_module(f"experiments.configs.{name}_quickstart")
            config = module.get_config("smoke" if FAST else None)
            if not FAST:
              config.eval_examples = 200
            if name == "nvae":  # the 8-bit digits the others model
              config.binarize, config.model = "", dict(config.model, binarized=False)
            if name == "stylegan2" and not FAST:  # its evaluation (FID) with the notebooks' small classifier
              config.sample_metrics = dict(num_samples=200, classifier_steps=300)
            configs.append(config)
          BUDGET = "steps:2" if FAST else "images:3200"  # 50 steps of 64 (Glow, NVAE), 200 of 16, 100 of 32
          runs = os.path.join(ROOT, "compare_fast" if FAST else "compare")
          workdirs = comparison.train_for_budget(configs, NAMES, BUDGET, runs)
          """),
      md("## Measure them the same way"),
      code("""
          if FAST:
            options = comparison.Options(
                num_examples=8, num_samples=8, iw_samples=2, iw_chunk_size=1, project_steps=2, num_reconstruct=2,
                sample_batch=8, sample_metrics=dict(batch_size=8, classifier_steps=2, classifier_examples=32,
                                                    classifier_widths=(4,), classifier_embed_dim=4))
          else:
            options = comparison.Options(num_examples=128, num_samples=128, iw_samples=10, project_steps=50,
                                         num_reconstruct=16, sample_metrics=dict(classifier_steps=300))
          rows, settings, panels = comparison.measure(workdirs, options)
          """),
      code("""
          from IPython.display import Markdown

          display(Markdown(comparison.markdown(rows, settings)))
          show(comparison.side_by_side(panels, NAMES))
          """),
      md("`comparison.write(OUT, rows, settings, panels)` saves the table as Markdown and JSON, and the picture."),
  ]


NOTEBOOKS = {"glow": glow, "nvae": nvae, "lmconv": lmconv, "stylegan2": stylegan2, "compare": compare}


def build(name):
  notebook = nbformat.v4.new_notebook(cells=NOTEBOOKS[name]())
  notebook.metadata.update(kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
                           language_info={"name": "python"}, colab={"provenance": []})
  for i, cell in enumerate(notebook.cells):
    cell.id = f"{name}-{i}"  # stable ids: rebuilding an unchanged notebook changes nothing
  return notebook


def main():
  for name in NOTEBOOKS:
    nbformat.write(build(name), os.path.join(HERE, f"{name}.ipynb"))


if __name__ == "__main__":
  main()
