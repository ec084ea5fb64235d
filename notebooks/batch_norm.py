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
# # Batch Normalization, step by step
#
# Ioffe & Szegedy 2015 with `bnreg`: Algorithm 1 on a toy batch, Algorithm 2 and why it uses
# $\frac{m}{m-1}$, the paper's backward formulas against `jax.grad`, a short run of the paper's
# MNIST network (Fig. 1), and the measured accelerated Inception-style nets (Fig. 2 and 3). Every
# function used here lives in `bnreg`; this notebook only calls them.
# Open it with `jupytext --to notebook notebooks/batch_norm.py`, or run it as a script.

# %%
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from IPython.display import Image, Markdown, display

import bnreg
import experiments
from bnreg import study
from experiments import bn_accelerate, bn_mnist

# %% [markdown]
# ## Algorithm 1: normalise each feature over the mini-batch
#
# $\mu_B = \frac1m\sum_i x_i$, $\sigma_B^2 = \frac1m\sum_i (x_i-\mu_B)^2$ (the *biased* variance),
# $\hat x_i = \frac{x_i-\mu_B}{\sqrt{\sigma_B^2+\epsilon}}$, $y_i = \gamma\hat x_i + \beta$.

# %%
x = jax.random.normal(jax.random.key(0), (8, 3)) * jnp.array([1.0, 5.0, 0.1]) + jnp.array(
    [3.0, -2.0, 10.0]
)
params, state = bnreg.init_batch_norm(3)
y, new_state = bnreg.batch_norm(x, params, state, train=True, momentum=0.9)
print("per-feature mean of y:", np.round(y.mean(0), 6))
print("per-feature variance of y:", np.round(y.var(0), 4))
print("EMA mean after one step (momentum 0.9):", new_state.mean)

# %% [markdown]
# With $\gamma = \sqrt{\sigma_B^2+\epsilon}$ and $\beta = \mu_B$ the layer is the identity: BN can
# represent the unnormalised network.

# %%
identity = bnreg.BatchNormParams(jnp.sqrt(x.var(0) + 1e-5), x.mean(0))
y_identity, _ = bnreg.batch_norm(x, identity, state, train=True)
print("max |y - x| with γ = σ, β = μ:", float(jnp.abs(y_identity - x).max()))

# %% [markdown]
# ## Algorithm 2: population statistics, and why $\frac{m}{m-1}$
#
# The mean of the biased batch variance is $\frac{m-1}{m}\mathrm{Var}[x]$, so Alg. 2 corrects it:
# $\mathrm{Var}[x] = \frac{m}{m-1}E_B[\sigma_B^2]$. With small batches the difference is large.
# Here the data has variance 4 and the batches hold $m = 4$ examples.

# %%
m, num_batches = 4, 2000
batches = 2.0 * jax.random.normal(jax.random.key(1), (num_batches, m, 1))
accumulator = bnreg.population_stats_init(1)
for batch in batches:
    accumulator = bnreg.population_stats_update(accumulator, batch)
population = bnreg.population_stats_finalize(accumulator)
print(f"mean biased batch variance: {float(batches.var(axis=1).mean()):.3f} (≈ 4·(m-1)/m = 3)")
print(f"Alg. 2 population variance: {float(population.var[0]):.3f} (≈ 4)")

# %% [markdown]
# ## The paper's backward pass equals autodiff
#
# `backward="paper"` implements the gradients of Sec. 3 literally (a `jax.custom_vjp`);
# `backward="autodiff"` lets JAX differentiate Alg. 1. They agree to float32 precision.

# %%
upstream = jax.random.normal(jax.random.key(2), x.shape)


def loss(x, params, backward):
    y, _ = bnreg.batch_norm(x, params, state, train=True, backward=backward)
    return jnp.sum(y * upstream)


params = bnreg.BatchNormParams(jnp.array([0.5, 2.0, 1.5]), jnp.array([0.1, -0.3, 0.0]))
paper = jax.grad(loss, argnums=(0, 1))(x, params, "paper")
autodiff = jax.grad(loss, argnums=(0, 1))(x, params, "autodiff")
names = ["dx", "dγ", "dβ"]
for name, a, b in zip(names, jax.tree.leaves(paper), jax.tree.leaves(autodiff), strict=True):
    print(f"max |{name} paper − autodiff| = {float(jnp.abs(a - b).max()):.2e}")

# %% [markdown]
# ## Fig. 1 in miniature
#
# The study's network (three hidden layers of 100 sigmoid units, N(0, 0.1²) init, SGD, batch 60)
# with and without BN, in the study's smoke size on scikit-learn's digits (8×8 inputs, so
# 64-100-100-100-10 instead of MNIST's 784-100-100-100-10) so that it runs in seconds. The full
# study is `python -m experiments.bn_mnist` (see its docstring).

# %%
config = bn_mnist.get_config("smoke")
with config.unlocked():
    config.progress = False
results, *figures = study.run(bn_mnist.STUDY, config, tempfile.mkdtemp(prefix="bnreg_bn_mnist_"))
display(Markdown(results.read_text()))

# %% [markdown]
# Fig. 1a (test accuracy against training steps), Fig. 1b,c (the last hidden layer's input
# distribution over training, as 15/50/85th percentiles) and the learning-rate sweep that chose
# the rates.

# %%
for figure in figures:
    display(Image(filename=str(figure)))

# %% [markdown]
# ## Accelerating BN networks (Sec. 4.2, Fig. 2 and 3)
#
# The paper's ImageNet claims, measured with `experiments/bn_accelerate.py` on a small
# Inception-style convnet and Fashion-MNIST (the committed run,
# `experiments/results/bn_accelerate_fashion_mnist`): the Inception without BN; BN added;
# BN-x5 and BN-x30 with the accelerating changes (lr0 × 5 and × 30, no dropout, λ ÷ 5, the decay
# 6× faster per step); and BN-x5 and the Inception with sigmoids. The claims with their regime
# gates, Fig. 3's table of the steps each net needs to reach the Inception's best accuracy, then
# Fig. 2 and the tuning that chose the Inception's lr0.

# %%
accelerated = Path(experiments.__file__).parent / "results" / "bn_accelerate_fashion_mnist"
display(Markdown((accelerated / "results.md").read_text()))

# %%
for figure in bn_accelerate.FIGURES:
    display(Image(filename=str(accelerated / figure)))
