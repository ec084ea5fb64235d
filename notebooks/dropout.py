# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Dropout, step by step
#
# Srivastava et al. 2014 with `bnreg`: Bernoulli masks and the two ways of placing the factor
# $p$ (both give the test-time network in expectation), Gaussian dropout with the same variance,
# and Monte-Carlo model averaging against the weight-scaling approximation on a small trained net
# (Fig. 11 in miniature), then the study's committed results. Every function used here lives in
# `bnreg`; this notebook only calls them. Open it with
# `jupytext --to notebook notebooks/dropout.py`, or run it as a script.
#
# Convention: `rate` is the *drop* probability (as in flax and PyTorch); the paper's *retain*
# probability is $p = 1 - \text{rate}$.

# %%
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

import bnreg
import experiments
from bnreg import engine, plots
from bnreg.config import default_config, override

# %% [markdown]
# ## Dropout masks (Sec. 4)
#
# Each unit is kept with probability $p$: $r_j \sim \mathrm{Bernoulli}(p)$,
# $\tilde y = r \odot y$. The factor $p$ goes in one of two places:
#
# | scaling | train (`deterministic=False`) | test (`deterministic=True`) |
# |---|---|---|
# | `"inverted"` (default) | $r \odot y / p$ | $y$ |
# | `"paper"` | $r \odot y$ | $p\,y$ (weights $\times\, p$) |
#
# Either way $\mathbb{E}_r[\text{train output}] = \text{test output}$. One mask on a vector of
# ones, with rate 0.5 ($p = 0.5$):

# %%
rate = 0.5
p = 1 - rate
ones = jnp.ones(12)
print("inverted:", bnreg.dropout(jax.random.key(0), ones, rate=rate))
print("paper:   ", bnreg.dropout(jax.random.key(0), ones, rate=rate, scaling="paper"))
print("test, inverted:", bnreg.dropout(None, ones, rate=rate, deterministic=True))
print("test, paper:   ", bnreg.dropout(None, ones, rate=rate, deterministic=True, scaling="paper"))

# %% [markdown]
# The expectation, numerically: average $N$ masks on a fixed vector $y$ and compare with the
# deterministic output. The average of $N$ masks has standard error
# $|y_j|\sqrt{(1-p)/(pN)}$ (inverted) or $|y_j|\sqrt{p(1-p)/N}$ (paper), so with
# $N = 200\,000$ the difference is a few thousandths.

# %%
y = jax.random.normal(jax.random.key(1), (8,)) * 2.0
num_masks = 200_000
keys = jax.random.split(jax.random.key(2), num_masks)
for scaling in ("inverted", "paper"):
    samples = jax.vmap(lambda k, s=scaling: bnreg.dropout(k, y, rate=rate, scaling=s))(keys)
    test = bnreg.dropout(None, y, rate=rate, deterministic=True, scaling=scaling)
    difference = float(jnp.abs(samples.mean(0) - test).max())
    factor = (1 - p) / p if scaling == "inverted" else p * (1 - p)
    standard_error = float(jnp.abs(y).max()) * np.sqrt(factor / num_masks)
    print(f"{scaling:>8}: max |mean of {num_masks} masks − test output| = {difference:.4f} "
          f"(largest standard error {standard_error:.4f})")
    assert difference < 4 * standard_error, difference

# %% [markdown]
# The running average over the first $n$ masks approaches the test output like $1/\sqrt n$
# (inverted scaling, three of the units):

# %%
samples = jax.vmap(lambda k: bnreg.dropout(k, y, rate=rate))(keys[:5_000])
counts = np.arange(1, samples.shape[0] + 1)
running = np.cumsum(np.asarray(samples), axis=0) / counts[:, None]
fig, axes = plots.figure(1, 1, width=5.5, height=3.2)
for unit in range(3):
    axes[0, 0].plot(counts, running[:, unit], color=f"C{unit}", label=f"unit {unit}")
    axes[0, 0].axhline(float(y[unit]), color=f"C{unit}", linestyle=":")
axes[0, 0].set(xscale="log", xlabel="masks averaged", ylabel="running mean",
               title="Average of thinned outputs → test output (dotted)")
axes[0, 0].legend()
display(fig)
plt.close(fig)

# %% [markdown]
# Scaling a layer's output by $p$ at test time is the paper's "weights $\times\, p$": for the
# next layer, $(p\,y) W = y\,(p W)$.

# %%
W = jax.random.normal(jax.random.key(3), (8, 4))
scaled_output = bnreg.dropout(None, y, rate=rate, deterministic=True, scaling="paper") @ W
print("max |(p·y)W − y(pW)|:", float(jnp.abs(scaled_output - y @ (p * W)).max()))

# %% [markdown]
# ## Gaussian dropout (Sec. 10)
#
# Multiply by $r_j \sim \mathcal N(1, \sigma^2)$ with $\sigma^2 = \frac{1-p}{p}$: the mean is
# one, so the test-time network is the network as it is (like inverted dropout), and the
# variance is that of inverted Bernoulli dropout's factor $r/p$,
# $\mathrm{Var}[r/p] = \frac{p(1-p)}{p^2} = \frac{1-p}{p}$. The multiplier is
# `gaussian_dropout` applied to ones.

# %%
for rate in (0.2, 0.5, 0.8):
    p = 1 - rate
    sigma2 = (1 - p) / p
    gaussian = bnreg.gaussian_dropout(jax.random.key(4), jnp.ones(1_000_000), rate=rate)
    bernoulli = bnreg.dropout(jax.random.key(5), jnp.ones(1_000_000), rate=rate)
    print(f"rate {rate}: σ² = (1−p)/p = {sigma2:.3f}; Gaussian mean {float(gaussian.mean()):.4f}, "
          f"var {float(gaussian.var()):.4f}; inverted Bernoulli mean "
          f"{float(bernoulli.mean()):.4f}, var {float(bernoulli.var()):.4f}")
    assert abs(float(gaussian.mean()) - 1) < 0.01 and abs(float(gaussian.var()) - sigma2) < 0.02
    assert abs(float(bernoulli.mean()) - 1) < 0.01 and abs(float(bernoulli.var()) - sigma2) < 0.02
test = bnreg.gaussian_dropout(None, y, rate=0.5, deterministic=True)
print("test time, max |output − y|:", float(jnp.abs(test - y).max()))

# %% [markdown]
# ## Monte-Carlo averaging vs weight scaling (Sec. 7, Fig. 11 in miniature)
#
# The exact test-time prediction of a dropout net averages over all $2^n$ thinned nets. The
# paper approximates it with the weight-scaled net (here: the deterministic net, since the
# scaling is inverted) and checks it against a Monte-Carlo average of $k$ sampled thinned nets,
#
# $$\hat P(y \mid x) = \frac1k \sum_{i=1}^k \mathrm{softmax}\big(f(\kappa_i, x)\big),$$
#
# finding that the two agree from $k \approx 50$ on (MNIST). Here: a 64-64-64-10 ReLU net on
# scikit-learn's digits (8×8 inputs; 1497 training and 300 test images) with input dropout 0.2
# and hidden dropout 0.5, trained by the engine for 1500 steps of SGD with momentum, three
# seeds as members of one compiled run. The engine's `monte_carlo` final evaluator reports the
# test error for each $k$ (columns `error_mc_k<k>`), beside the deterministic net's
# `error_deterministic`.

# %%
samples_k = (1, 2, 5, 10, 20, 50)
seeds = (0, 1, 2)
config = override(default_config(), {
    "dataset": "digits",
    "model.hidden_sizes": (64, 64),
    "model.activation": "relu",
    "model.input_dropout": 0.2,
    "model.hidden_dropout": 0.5,
    "model.kernel_init": "lecun_normal",
    "optimizer.learning_rate": 0.03,
    "optimizer.momentum": 0.9,
    "batch_size": 32,
    "num_steps": 1500,
    "eval_every": 500,
    "checkpoint_every": 0,
    "progress": False,
    "probe.layers": (),
    "evaluation.final": ("monte_carlo",),
    "evaluation.monte_carlo_samples": samples_k,
    "sweep.seed": seeds,
})
with tempfile.TemporaryDirectory(prefix="bnreg_dropout_digits_") as workdir:
    result = engine.train_and_evaluate(config, workdir)
members = result.summary["members"]
print("evaluators:", result.summary["evaluators"])
weight_scaling = np.array([m["error_deterministic"] for m in members])
monte_carlo = np.array([[m[f"error_mc_k{k}"] for m in members] for k in samples_k])  # (k, seeds)
rows = [f"| {k} | " + " | ".join(f"{e:.1%}" for e in errors) + " |"
        for k, errors in zip(samples_k, monte_carlo, strict=True)]
display(Markdown("\n".join([
    "| k | " + " | ".join(f"seed {m['seed']}" for m in members) + " |",
    "|---|" + "---|" * len(members),
    *rows,
    "| weight scaling | " + " | ".join(f"{e:.1%}" for e in weight_scaling) + " |",
])))

# %% [markdown]
# One thinned net ($k = 1$) is much worse than the weight-scaled net; the average of a few tens
# of them reaches it. (300 test images: one image is 0.33 %.)

# %%
fig, axes = plots.figure(1, 1, width=5.5, height=3.5)
ax = axes[0, 0]
plots.versus(ax, samples_k, 100 * monte_carlo, label="Monte-Carlo average of k thinned nets")
mean, std = 100 * weight_scaling.mean(), 100 * weight_scaling.std(ddof=1)
ax.axhline(mean, color="C1", label="weight scaling (deterministic net)")
ax.axhspan(mean - std, mean + std, color="C1", alpha=0.2, lw=0)
ax.set(xlabel="k (thinned nets averaged)", ylabel="test error (%)",
       title=f"Digits, mean ± std over {len(seeds)} seeds")
ax.legend()
display(fig)
plt.close(fig)

# %% [markdown]
# ## The study: dropout nets on Fashion-MNIST
#
# The full study (`experiments/results/dropout_nets_fashion_mnist`): its tables with the paper's
# claims beside the measurements, the overfitting curves with and without dropout, and Fig. 11
# (Monte-Carlo averaging vs weight scaling) at full size.

# %%
study = Path(experiments.__file__).parent / "results" / "dropout_nets_fashion_mnist"
display(Markdown((study / "results.md").read_text()))

# %%
display(Image(filename=str(study / "overfitting.png")))
display(Image(filename=str(study / "fig11.png")))

# %% [markdown]
# ## The study: dropout's features and sparsity (Fig. 7 and Fig. 8)
#
# An autoencoder 784-256-784 with ReLU hidden units, trained without and with dropout (retain
# p = 0.5 on the hidden layer), the two nets paired by seed
# (`experiments/results/dropout_autoencoder_fashion_mnist`): the hidden units' features side by
# side (Fig. 7), then the histograms of the units' mean activations and of all activations
# (Fig. 8), with the measures of sparsity and the verdicts.

# %%
study = Path(experiments.__file__).parent / "results" / "dropout_autoencoder_fashion_mnist"
display(Markdown((study / "results.md").read_text()))

# %%
display(Image(filename=str(study / "features.png")))
display(Image(filename=str(study / "sparsity.png")))

# %% [markdown]
# ## The study: the retain probability p (Fig. 9)
#
# Test and training error against p for (a) n fixed and (b) p·n fixed
# (`experiments/results/dropout_p_fashion_mnist`), dropout in the paper's form so that one
# learning rate and max-norm c serve every p as in the paper.

# %%
study = Path(experiments.__file__).parent / "results" / "dropout_p_fashion_mnist"
display(Markdown((study / "results.md").read_text()))
display(Image(filename=str(study / "fig9.png")))

# %% [markdown]
# ## The study: the data-set size (Fig. 10)
#
# Early-stopped test error against the training-set size, with and without dropout
# (`experiments/results/dropout_data_size_fashion_mnist`).

# %%
study = Path(experiments.__file__).parent / "results" / "dropout_data_size_fashion_mnist"
display(Markdown((study / "results.md").read_text()))
display(Image(filename=str(study / "fig10.png")))
