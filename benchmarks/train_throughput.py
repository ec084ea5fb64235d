"""Training throughput of the BN paper's MNIST MLP: bnreg against its peers, side by side.

The network (784-100-100-100-10 sigmoid, BN before each sigmoid, N(0, 0.1²) init, plain SGD at lr
0.1, batches of 60) is trained on the same synthetic binarized-MNIST-shaped data (60000×784) by

(a) bnreg, one run — one member, ``bnreg.train.make_train_chunk`` (``lax.scan``-fused steps,
    batches drawn on device);
(b) a standard flax.linen model (``nn.BatchNorm``) with a jitted ``train_step`` called from a
    Python loop, the batch taken by indexing the on-device training array with a host index
    array (the flax examples' style); (b′) the same with the gather inside the jitted step;
(c) the same flax model and step in a ``lax.scan`` (a stronger peer);
(d) PyTorch eager, ``nn.BatchNorm1d``, on CPU with its default thread count; (d′) one thread;
(e) bnreg with 5 seeds in one program (5 members, vmapped), aggregate member-steps/s.

Every implementation is compiled / warmed up first; then the implementations take turns (round
robin), each running ``--steps`` steps per turn, ``--repeats`` turns; steps/s is the median
turn. Taking turns exposes all of them to the same background load.

Then XLA's CPU threading settings are compared for bnreg (1 and 5 members), each in a fresh
subprocess (flags are read when the backend starts): the default; Eigen's multi-threading off;
the process pinned to one core (``taskset``, and ``os.sched_setaffinity`` from inside the
process before the backend starts); two host devices
(``--xla_force_host_platform_device_count=2``) with the member axis sharded over them; and two
processes pinned to one core each, the members split between them. GFLOP/s counts the
forward+backward matrix products analytically (:func:`benchmarks.common.matmul_flops_per_step`);
the peak is a 2048×2048 float32 matmul in jax, measured in the same run.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.train_throughput            # everything, ~10 min on 2 cores
  .venv/bin/python -m benchmarks.train_throughput --steps 500 --repeats 2 --variants default
  .venv/bin/python -m benchmarks.train_throughput --no-variants   # peers only

Results: ``benchmarks/results/train_throughput.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks import common
from bnreg import train
from experiments.bn_mnist import get_config, study_config

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

Runner = Callable[[int], None]  # runs n training steps and blocks until they are done


# --------------------------------------------------------------------------------------------
# (a, e) bnreg
# --------------------------------------------------------------------------------------------


def bnreg_engine() -> tuple[nn.Module, optax.GradientTransformation]:
    """bnreg's model and optimizer for the BN study's BN net (``experiments/bn_mnist.py``)."""
    config = study_config(get_config(), "bn", [common.LEARNING_RATE])
    return train.build_model(config.model, common.NUM_CLASSES), train.build_optimizer(
        config.optimizer
    )


def shard_over_members(
    state: train.TrainState, images: jax.Array, labels: jax.Array
) -> tuple[train.TrainState, jax.Array, jax.Array]:
    """Places the member axis of ``state`` across all devices (a 1-D mesh ``'m'``); the shared
    step and the training data are replicated. The prototype of the engine change."""
    mesh = Mesh(np.array(jax.devices()), ("m",))
    per_member = NamedSharding(mesh, P("m"))
    replicated = NamedSharding(mesh, P())
    step = jax.device_put(state.step, replicated)
    state = jax.tree.map(lambda x: jax.device_put(x, per_member), state._replace(step=None))
    state = state._replace(step=step)
    return state, jax.device_put(images, replicated), jax.device_put(labels, replicated)


def bnreg_runner(
    images: np.ndarray, labels: np.ndarray, seeds: list[int], *, shard: bool = False
) -> Runner:
    """bnreg's scan-fused chunk training ``len(seeds)`` members; with ``shard``, the members are
    padded to a multiple of the device count and sharded (see :func:`shard_over_members`)."""
    model, tx = bnreg_engine()
    if shard:
        num_devices = jax.device_count()
        padding = -len(seeds) % num_devices
        seeds = seeds + [max(seeds) + 1 + i for i in range(padding)]
    members = [train.Member(common.LEARNING_RATE, seed) for seed in seeds]
    device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
    state = train.init_members(model, tx, members, device_images[:1])
    if shard:
        state, device_images, device_labels = shard_over_members(
            state, device_images, device_labels
        )
    chunk = train.make_train_chunk(model, tx, batch_size=common.BATCH_SIZE)
    holder = [state]

    def run(num_steps: int) -> None:
        holder[0], losses = chunk(holder[0], device_images, device_labels, num_steps)
        losses.block_until_ready()

    return run


# --------------------------------------------------------------------------------------------
# (b, c) a standard flax.linen model and train step
# --------------------------------------------------------------------------------------------


class FlaxMLP(nn.Module):
    """The network with flax's own ``nn.Dense`` and ``nn.BatchNorm``."""

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        init = nn.initializers.normal(common.INIT_STDDEV)
        for width in common.HIDDEN_SIZES:
            x = nn.Dense(width, use_bias=False, kernel_init=init)(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=common.BN_MOMENTUM,
                epsilon=common.BN_EPSILON,
            )(x)
            x = nn.sigmoid(x)
        return nn.Dense(common.NUM_CLASSES, kernel_init=init)(x)


class FlaxState(train_state.TrainState):
    batch_stats: Any


def flax_state(seed: int = 0) -> FlaxState:
    model = FlaxMLP()
    variables = model.init(
        jax.random.key(seed), jnp.zeros((1, common.INPUT_SIZE)), train=False
    )
    return FlaxState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=optax.sgd(common.LEARNING_RATE),
    )


def flax_train_step(
    state: FlaxState, images: jax.Array, labels: jax.Array
) -> tuple[FlaxState, jax.Array]:
    """The flax examples' train step: BN in training mode, ``batch_stats`` updated."""

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"]), loss


def host_batch_indices(num_examples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Batch index arrays of shuffled epochs (drop remainder), drawn on the host."""
    rng = np.random.default_rng(seed)
    steps_per_epoch = num_examples // common.BATCH_SIZE
    while True:
        permutation = rng.permutation(num_examples)[: steps_per_epoch * common.BATCH_SIZE]
        yield from permutation.reshape(steps_per_epoch, common.BATCH_SIZE)


def flax_loop_runner(images: np.ndarray, labels: np.ndarray, *, gather_in_step: bool) -> Runner:
    """(b) a jitted step per Python iteration. Without ``gather_in_step`` the batch is
    ``device_images[host_indices]`` (an eager gather, the flax examples' style); with it, the
    indices go into the jitted step, which gathers."""
    device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
    indices = host_batch_indices(len(images))
    holder = [flax_state()]
    if gather_in_step:

        def gather_step(state, all_images, all_labels, batch):
            return flax_train_step(state, all_images[batch], all_labels[batch])

        step = jax.jit(gather_step, donate_argnums=0)

        def run(num_steps: int) -> None:
            state = holder[0]
            for _ in range(num_steps):
                state, loss = step(state, device_images, device_labels, next(indices))
            loss.block_until_ready()
            holder[0] = state

        return run

    step = jax.jit(flax_train_step, donate_argnums=0)

    def run(num_steps: int) -> None:
        state = holder[0]
        for _ in range(num_steps):
            batch = next(indices)
            state, loss = step(state, device_images[batch], device_labels[batch])
        loss.block_until_ready()
        holder[0] = state

    return run


def flax_scan_runner(images: np.ndarray, labels: np.ndarray) -> Runner:
    """(c) the flax step in a ``lax.scan`` over a chunk's batch indices (drawn on the host, one
    transfer of ``(steps, 60)`` int32 per chunk); data on device."""
    device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
    indices = host_batch_indices(len(images))

    def chunk(state, all_images, all_labels, batches):
        def body(state, batch):
            return flax_train_step(state, all_images[batch], all_labels[batch])

        return jax.lax.scan(body, state, batches)

    compiled = jax.jit(chunk, donate_argnums=0)
    holder = [flax_state()]

    def run(num_steps: int) -> None:
        batches = jnp.asarray(np.stack([next(indices) for _ in range(num_steps)]))
        holder[0], losses = compiled(holder[0], device_images, device_labels, batches)
        losses.block_until_ready()

    return run


def flax_step_cost_flops(images: np.ndarray, labels: np.ndarray) -> float | None:
    """XLA's own FLOP count of one flax train step (``compile().cost_analysis()``), to check
    the analytic count; includes element-wise work."""
    batch = slice(0, common.BATCH_SIZE)
    compiled = (
        jax.jit(flax_train_step)
        .lower(flax_state(), jnp.asarray(images[batch]), jnp.asarray(labels[batch]))
        .compile()
    )
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


# --------------------------------------------------------------------------------------------
# (d) PyTorch eager
# --------------------------------------------------------------------------------------------


def torch_runner(images: np.ndarray, labels: np.ndarray, *, threads: int | None) -> Runner:
    """(d) PyTorch eager on CPU: per step, index the batch, forward, backward, ``SGD.step``.
    ``threads=None`` keeps PyTorch's default intra-op thread count."""
    import torch  # JAX-only worker processes never load PyTorch

    model = common.torch_mlp(batch_norm=True, seed=0).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=common.LEARNING_RATE)
    torch_images = torch.from_numpy(images)
    torch_labels = torch.from_numpy(labels).long()
    indices = host_batch_indices(len(images))
    default_threads = torch.get_num_threads()

    def run(num_steps: int) -> None:
        torch.set_num_threads(threads or default_threads)
        try:
            for _ in range(num_steps):
                batch = torch.from_numpy(next(indices))
                optimizer.zero_grad(set_to_none=True)
                logits = model(torch_images[batch])
                loss = torch.nn.functional.cross_entropy(logits, torch_labels[batch])
                loss.backward()
                optimizer.step()
            loss.item()
        finally:
            torch.set_num_threads(default_threads)

    return run


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def round_robin(runners: dict[str, Runner], steps: int, repeats: int) -> dict[str, list[float]]:
    """Warms every runner up with one ``steps``-step call (compilation), then times ``repeats``
    rounds in which each runner in turn runs ``steps`` steps. Returns seconds per call."""
    for name, run in runners.items():
        seconds = common.timed(lambda run=run: run(steps))
        print(f"  warm-up {name}: {seconds:.1f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(repeats):
        for name, run in runners.items():
            times[name].append(common.timed(lambda run=run: run(steps)))
        print(
            f"  round {round_index + 1}/{repeats}: "
            + ", ".join(f"{name} {steps / t[-1]:.0f}/s" for name, t in times.items()),
            flush=True,
        )
    return times


def peak_matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a jitted ``size × size`` float32 matmul (median of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    seconds = [common.timed(lambda: matmul(a, b).block_until_ready()) for _ in range(repeats)]
    return common.median_rate(seconds, 2 * size**3) / 1e9


def gflops(member_steps_per_second: float) -> float:
    return member_steps_per_second * common.matmul_flops_per_step() / 1e9


# --------------------------------------------------------------------------------------------
# Threading variants, each in its own process
# --------------------------------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"description": "XLA defaults (2 cores, XLA's intra-op thread pool)"},
    "eigen_off": {
        "description": "`--xla_cpu_multi_thread_eigen=false`",
        "xla_flags": "--xla_cpu_multi_thread_eigen=false",
    },
    "eigen_off_intra1": {
        "description": "`--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`",
        "xla_flags": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    },
    "taskset_1core": {
        "description": "`taskset -c 0` (process pinned to one core)",
        "taskset": "0",
    },
    "affinity_1core": {
        "description": "`os.sched_setaffinity(0, {0})` in-process, before the backend starts",
        "cpus": [0],
    },
    "2dev_sharded": {
        "description": "`--xla_force_host_platform_device_count=2`, members sharded on 'm'",
        "xla_flags": "--xla_force_host_platform_device_count=2",
        "shard": True,
    },
    "2dev_sharded_eigen_off": {
        "description": "2 host devices, members sharded, Eigen multi-threading off",
        "xla_flags": "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false",
        "shard": True,
    },
    "pinned_pair": {
        "description": "two processes, `os.sched_setaffinity` to core 0 / core 1, members split",
        "pair": True,
    },
}


def worker(args: argparse.Namespace) -> None:
    """One variant's measurement in this (fresh) process; prints ``RESULT {json}``."""
    if args.cpus:
        # Threads inherit the creating thread's affinity; XLA's pool starts with the backend.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    images, labels = common.synthetic_mnist()
    seeds = [int(s) for s in args.seeds.split(",")]
    runners = {}
    if args.single:
        runners["bnreg_1"] = bnreg_runner(images, labels, [0])
    runners["bnreg_many"] = bnreg_runner(images, labels, seeds, shard=args.shard)
    if args.barrier:
        _wait_at_barrier(Path(args.barrier), args.barrier_count)
    times = round_robin(runners, args.steps, args.repeats)
    result = {
        "devices": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "thread_affinities": common.thread_affinities(),
        "members": len(seeds),
        "seconds": times,
        "steps_per_s": {
            name: common.median_rate(seconds, args.steps) for name, seconds in times.items()
        },
    }
    if args.single:
        result["peak_matmul_gflops"] = peak_matmul_gflops()
    print("RESULT " + json.dumps(result), flush=True)


def _wait_at_barrier(directory: Path, count: int) -> None:
    (directory / str(os.getpid())).touch()
    while len(list(directory.iterdir())) < count:
        time.sleep(0.05)


def _worker_command(args: argparse.Namespace, seeds: list[int], **options: Any) -> list[str]:
    command = [
        sys.executable, "-m", "benchmarks.train_throughput", "--worker",
        "--steps", str(args.steps), "--repeats", str(args.repeats),
        "--seeds", ",".join(map(str, seeds)),
    ]
    if options.get("single", True):
        command.append("--single")
    if options.get("shard"):
        command.append("--shard")
    if options.get("cpus"):
        command += ["--cpus", ",".join(map(str, options["cpus"]))]
    if options.get("barrier"):
        command += ["--barrier", options["barrier"], "--barrier-count", "2"]
    if options.get("taskset"):
        if shutil.which("taskset") is None:
            raise RuntimeError("taskset is not installed (util-linux); skip this variant.")
        command = ["taskset", "-c", options["taskset"], *command]
    return command


def _worker_env(xla_flags: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _parse_result(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("worker printed no RESULT line:\n" + output[-3000:])


def run_variant(args: argparse.Namespace, name: str, seeds: list[int]) -> dict[str, Any]:
    """Runs one threading variant in fresh subprocess(es) and returns its measurements."""
    spec = VARIANTS[name]
    print(f"variant {name}: {spec['description']}", flush=True)
    load_before = os.getloadavg()
    if spec.get("pair"):
        halves = [seeds[: (len(seeds) + 1) // 2], seeds[(len(seeds) + 1) // 2 :]]
        with tempfile.TemporaryDirectory() as barrier:
            processes = [
                subprocess.Popen(
                    _worker_command(args, half, single=False, cpus=[core], barrier=barrier),
                    env=_worker_env(None), cwd=REPO, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )
                for core, half in enumerate(halves)
            ]
            outputs = [p.communicate()[0] for p in processes]
        parts = [_parse_result(output) for output in outputs]
        member_rate = sum(
            part["steps_per_s"]["bnreg_many"] * part["members"] for part in parts
        )
        result = {
            "description": spec["description"],
            "members_split": [part["members"] for part in parts],
            "parts": parts,
            "many_member_steps_per_s": member_rate,
        }
    else:
        completed = subprocess.run(
            _worker_command(args, seeds, shard=spec.get("shard"), cpus=spec.get("cpus"),
                            taskset=spec.get("taskset")),
            env=_worker_env(spec.get("xla_flags")), cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
        )
        part = _parse_result(completed.stdout)
        result = {
            "description": spec["description"],
            **part,
            "single_steps_per_s": part["steps_per_s"]["bnreg_1"],
            "many_member_steps_per_s": part["steps_per_s"]["bnreg_many"] * len(seeds),
        }
    result["loadavg_before"] = [round(v, 2) for v in load_before]
    print(
        f"  -> 1 member {result.get('single_steps_per_s', float('nan')):.0f} steps/s, "
        f"{len(seeds)} members {result['many_member_steps_per_s']:.0f} member-steps/s",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

PEERS = {
    "bnreg_1": "(a) bnreg, 1 run (scan-fused chunk)",
    "flax_loop": "(b) flax.linen nn.BatchNorm, jitted step in a Python loop, eager batch indexing",
    "flax_loop_gather": "(b′) flax.linen, jitted step in a Python loop, gather inside the step",
    "flax_scan": "(c) flax.linen in lax.scan",
    "torch_default": "(d) PyTorch eager nn.BatchNorm1d, CPU, default threads",
    "torch_1thread": "(d′) PyTorch eager, torch.set_num_threads(1)",
    "bnreg_5": "(e) bnreg, 5 seeds in one program (aggregate)",
}


def write_report(result: dict[str, Any]) -> str:
    peers = result["peers"]
    torch_rate = peers["torch_default"]["member_steps_per_s"]
    flax_rate = peers["flax_loop"]["member_steps_per_s"]
    peak = result["peak_matmul_gflops"]
    rows = []
    for name, description in PEERS.items():
        peer = peers[name]
        rate = peer["member_steps_per_s"]
        rows.append([
            description,
            peer["members"],
            f"{peer['steps_per_s']:.0f}",
            f"{rate:.0f}",
            f"{rate / torch_rate:.2f}×",
            f"{rate / flax_rate:.2f}×",
            f"{gflops(rate):.1f}",
            f"{100 * gflops(rate) / peak:.1f}%",
        ])
    lines = [
        "# Training throughput: the BN paper's MNIST MLP",
        "",
        f"Measured {result['date']} on {result['machine']['processor']} "
        f"({result['machine']['cpus']} cores), jax {result['versions']['jax']}, "
        f"flax {result['versions']['flax']}, torch {result['versions']['torch']} "
        f"(default {result['torch_default_threads']} threads). "
        f"Load average before / after: {result['loadavg_before']} / {result['loadavg_after']} "
        "(other processes were running; compare ratios, not absolute rates).",
        "",
        f"784-100-100-100-10 sigmoid, BN before each sigmoid, batch 60, SGD lr 0.1; synthetic "
        f"binarized data 60000×784. {result['steps']} steps per turn, median of "
        f"{result['repeats']} round-robin turns after warm-up. GFLOP/s = member-steps/s × "
        f"{common.matmul_flops_per_step() / 1e6:.2f} MFLOP (forward+backward matmuls, analytic; "
        f"XLA's cost analysis of one flax step: {result['xla_cost_flops_per_step'] / 1e6:.2f} "
        f"MFLOP incl. element-wise). Peak: 2048² float32 matmul in jax, "
        f"{peak:.0f} GFLOP/s (2 cores, XLA defaults).",
        "",
        common.markdown_table(
            ["implementation", "members", "steps/s", "member-steps/s", "vs PyTorch eager",
             "vs flax jit loop", "GFLOP/s", "% of peak"],
            rows,
        ),
        "",
    ]
    bnreg_1 = peers["bnreg_1"]["member_steps_per_s"]
    bnreg_5 = peers["bnreg_5"]["member_steps_per_s"]
    lines += [
        "Targets (XLA defaults, in this process):",
        "",
        f"- bnreg 1 run ≥ 4× PyTorch eager: **{bnreg_1 / torch_rate:.2f}×** "
        f"({'met' if bnreg_1 >= 4 * torch_rate else 'not met'})",
        f"- bnreg 1 run ≥ 1.0× flax jit loop: **{bnreg_1 / flax_rate:.2f}×** "
        f"({'met' if bnreg_1 >= flax_rate else 'not met'})",
        f"- bnreg 5 seeds ≥ 10× PyTorch single run (aggregate): **{bnreg_5 / torch_rate:.2f}×** "
        f"({'met' if bnreg_5 >= 10 * torch_rate else 'not met'})",
        "",
    ]
    if result.get("variants"):
        variants = result["variants"]
        base = variants.get("default")
        rows = []
        for name, variant in variants.items():
            single = variant.get("single_steps_per_s")
            many = variant["many_member_steps_per_s"]
            rows.append([
                name,
                variant["description"],
                f"{single:.0f}" if single else "—",
                f"{single / base['single_steps_per_s']:.2f}×" if single and base else "—",
                f"{single / torch_rate:.2f}×" if single else "—",
                f"{many:.0f}",
                f"{many / base['many_member_steps_per_s']:.2f}×" if base else "—",
                f"{many / torch_rate:.2f}×",
                f"{gflops(many):.1f}",
                f"{variant['peak_matmul_gflops']:.0f}" if "peak_matmul_gflops" in variant else "—",
                variant["loadavg_before"][0],
            ])
        lines += [
            f"## XLA CPU threading settings (bnreg; each in a fresh process; {result['members']} "
            "members for the aggregate)",
            "",
            "Ratios to PyTorch use the in-process PyTorch rate above (same run, earlier).",
            "",
            common.markdown_table(
                ["variant", "setting", "1 run steps/s", "vs default", "vs PyTorch",
                 f"{result['members']} seeds member-steps/s", "vs default", "vs PyTorch",
                 "GFLOP/s", "peak GFLOP/s", "load (1 min)"],
                rows,
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per timed turn")
    parser.add_argument("--repeats", type=int, default=3, help="timed turns per implementation")
    parser.add_argument("--members", type=int, default=5, help="seeds in one bnreg program")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated threading variants to run in subprocesses")
    parser.add_argument("--no-variants", action="store_true", help="skip the threading variants")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "train_throughput")
    # Worker mode (internal): one variant's measurement in a fresh process.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", default="", help=argparse.SUPPRESS)
    parser.add_argument("--barrier-count", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import flax
    import torch

    seeds = list(range(args.members))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine_load(),
        "versions": {"jax": jax.__version__, "flax": flax.__version__,
                     "torch": torch.__version__},
        "torch_default_threads": torch.get_num_threads(),
        "steps": args.steps,
        "repeats": args.repeats,
        "members": args.members,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "matmul_flops_per_step": common.matmul_flops_per_step(),
    }
    images, labels = common.synthetic_mnist()
    result["xla_cost_flops_per_step"] = flax_step_cost_flops(images, labels)
    result["peak_matmul_gflops"] = peak_matmul_gflops()
    print(f"peak matmul: {result['peak_matmul_gflops']:.0f} GFLOP/s", flush=True)
    runners = {
        "bnreg_1": bnreg_runner(images, labels, [0]),
        "flax_loop": flax_loop_runner(images, labels, gather_in_step=False),
        "flax_loop_gather": flax_loop_runner(images, labels, gather_in_step=True),
        "flax_scan": flax_scan_runner(images, labels),
        "torch_default": torch_runner(images, labels, threads=None),
        "torch_1thread": torch_runner(images, labels, threads=1),
        "bnreg_5": bnreg_runner(images, labels, seeds),
    }
    times = round_robin(runners, args.steps, args.repeats)
    result["peers"] = {}
    for name, seconds in times.items():
        members = args.members if name == "bnreg_5" else 1
        steps_per_s = common.median_rate(seconds, args.steps)
        result["peers"][name] = {
            "members": members,
            "seconds": seconds,
            "steps_per_s": steps_per_s,
            "member_steps_per_s": steps_per_s * members,
        }
    result["variants"] = {}
    if not args.no_variants:
        for name in filter(None, args.variants.split(",")):
            result["variants"][name] = run_variant(args, name, seeds)
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2))
    report = write_report(result)
    args.output.with_suffix(".md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
