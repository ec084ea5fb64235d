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
# # DropConnect, step by step
#
# Wan et al. 2013 with `bnreg`: a Bernoulli mask on every *weight*, a fresh one for every example
# as the paper trains; the mean network and the paper's Gaussian moment matching at inference,
# both checked against averaging over real masks; then the study's committed results. Every
# function used here lives in `bnreg`; this notebook only calls them. Open it with
# `jupytext --to notebook notebooks/dropconnect.py`, or run it as a script.
#
# Conventions: `rate` is the *drop* probability of a weight; the paper's retain probability is
# $p = 1 - \text{rate}$. Scaling is inverted: the masked pre-activation is divided by $p$ in
# training, so the mean network is the plain layer `x @ kernel + bias`, the paper's $a(pWv)$.

# %%
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

import bnreg
import experiments
from bnreg import plots

# %% [markdown]
# ## A mask per weight per example (Sec. 2)
#
# $r = a\big((M \odot W) v\big)$ with $M_{ij} \sim \mathrm{Bernoulli}(p)$. Feed the same input
# four times: with `per_example=True` each copy gets its own mask, hence its own output; with
# `per_example=False` one mask serves the batch and the four rows agree. The same key gives the
# same masks.

# %%
rate = 0.5
p = 1 - rate
kernel = jax.random.normal(jax.random.key(0), (6, 3))
bias = jnp.full((3,), 0.5)
v = jax.random.uniform(jax.random.key(1), (6,))
batch = jnp.tile(v, (4, 1))
key = jax.random.key(2)
per_example = bnreg.dropconnect_dense(key, batch, kernel, bias, rate=rate)
per_batch = bnreg.dropconnect_dense(key, batch, kernel, bias, rate=rate, per_example=False)
print("per example:\n", per_example)
print("one mask per batch:\n", per_batch)
print("mean network (noise off):", bnreg.dropconnect_dense(None, v[None], kernel, bias,
                                                          rate=rate, deterministic=True))
assert not np.allclose(per_example[0], per_example[1])
np.testing.assert_array_equal(per_batch[0], per_batch[1])
np.testing.assert_array_equal(per_example, bnreg.dropconnect_dense(key, batch, kernel, bias,
                                                                   rate=rate))

# %% [markdown]
# ## The Gaussian moment matching against real masks (Sec. 3)
#
# Over masks, each pre-activation $u$ has mean $pWv$ and variance $p(1-p)(W\odot W)(v\odot v)$
# (the bias a weight on a constant input 1; with inverted scaling both are divided by $p$ and
# $p^2$: `bnreg.dropconnect_moments`). Draw $N$ real masks, one per copy of $v$, and compare the
# empirical moments with the formula; the standard error of the mean is $\sigma/\sqrt N$.

# %%
num_masks = 100_000
wide_kernel = jax.random.normal(jax.random.key(3), (64, 4)) / 8
wide_bias = jnp.full((4,), 0.1)
x = jax.random.uniform(jax.random.key(4), (64,))
samples = bnreg.dropconnect_dense(jax.random.key(5), jnp.tile(x, (num_masks, 1)), wide_kernel,
                                  wide_bias, rate=rate)
mean, var = bnreg.dropconnect_moments(x[None], wide_kernel, wide_bias, rate=rate)
mean, var = mean[0], var[0]
print("mean: formula", np.round(mean, 4), " masks", np.round(samples.mean(0), 4))
print("var:  formula", np.round(var, 4), " masks", np.round(samples.var(0), 4))
standard_error = np.sqrt(var / num_masks)
assert np.all(np.abs(samples.mean(0) - mean) < 5 * standard_error)
np.testing.assert_allclose(samples.var(0), var, rtol=0.03)

# %% [markdown]
# The masked sum of 65 weighted inputs is close to Gaussian (the central limit theorem the paper
# leans on); one unit's histogram over the real masks against the matched density:

# %%
unit = 0
sigma = float(np.sqrt(var[unit]))
grid = np.linspace(float(mean[unit]) - 4 * sigma, float(mean[unit]) + 4 * sigma, 200)
density = np.exp(-0.5 * ((grid - float(mean[unit])) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
fig, axes = plots.figure(1, 1, width=5.5, height=3.2)
axes[0, 0].hist(np.asarray(samples[:, unit]), bins=80, density=True, alpha=0.5,
                label=f"{num_masks:,} real masks")
axes[0, 0].plot(grid, density, color="C1", label="N(mean, var) from the formula")
axes[0, 0].set(xlabel="pre-activation u", ylabel="density", title="One DropConnect unit")
axes[0, 0].legend()
display(fig)
plt.close(fig)

# %% [markdown]
# What inference needs is $\mathbb{E}_M[a(u)]$. The mean network answers $a(\mathbb{E}[u])$; the
# paper's inference averages $a$ over $Z$ samples of the matched Gaussian
# (`bnreg.dropconnect_gaussian_inference`). Against the average over the real masks, for a
# sigmoid unit: the mean network is off by the curvature of $a$; the Gaussian estimate's error
# falls like $1/\sqrt Z$ until it meets the approximation's own error (the masked sum is close
# to, not exactly, Gaussian), which here is several times smaller than the mean network's.

# %%
activation = jax.nn.sigmoid
real = np.asarray(activation(samples).mean(0))
mean_network = np.asarray(activation(mean))
print("E_M[a(u)] over real masks:", np.round(real, 4))
print("mean network a(E[u]):    ", np.round(mean_network, 4))
counts = (1, 10, 100, 1000, 10000)
gaps = []
for z in counts:
    gaussian = bnreg.dropconnect_gaussian_inference(
        jax.random.key(6), x[None], wide_kernel, wide_bias, rate=rate, activation=activation,
        num_samples=z)[0]
    gaps.append(float(np.abs(np.asarray(gaussian) - real).max()))
    print(f"Gaussian, Z = {z:>5}: max |estimate − real-mask average| = {gaps[-1]:.4f}")
mean_gap = float(np.abs(mean_network - real).max())
print(f"mean network:    max |a(E[u]) − real-mask average| = {mean_gap:.4f}")
assert gaps[-1] < mean_gap

fig, axes = plots.figure(1, 1, width=5.5, height=3.2)
axes[0, 0].plot(counts, gaps, marker="o", label="Gaussian moment matching")
axes[0, 0].axhline(mean_gap, color="C1", linestyle="--", label="mean network")
axes[0, 0].set(xscale="log", yscale="log", xlabel="Z, samples",
               ylabel="max |error| vs real masks", title="Sigmoid unit: E_M[a(u)]")
axes[0, 0].legend()
display(fig)
plt.close(fig)

# %% [markdown]
# ## The study (`experiments/dropconnect.py`)
#
# The committed Fashion-MNIST run (`experiments/results/dropconnect_fashion_mnist`): the
# 3 × 4 table of activations × {no drop, dropout, DropConnect, DropConnect with one mask per
# batch}, the claims with their regime gates, mean against Gaussian inference, and Fig. 2a/b/c.

# %%
study = Path(experiments.__file__).parent / "results" / "dropconnect_fashion_mnist"
display(Markdown((study / "results.md").read_text()))

# %%
for figure in ("inference.png", "convergence.png", "sizes.png", "rates.png"):
    display(Image(filename=str(study / figure)))
