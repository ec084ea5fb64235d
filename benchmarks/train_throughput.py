"""Training throughput of the BN paper's MNIST MLP: bnreg against its peers, side by side.

The network (784-100-100-100-10 sigmoid, BN before each sigmoid, no dense bias before BN,
N(0, 0.1²) init, plain SGD at lr 0.1, batches of 60) is trained on the same synthetic
binarized-MNIST-shaped data (60000×784) by

(a) bnreg, one run — one member, ``bnreg.engine.make_train_chunk`` (``lax.scan``-fused steps,
    batches drawn on device, the data order carried between chunks), called in chunks of 500
    steps as the BN study does (its ``eval_every``);
(b) a standard flax.linen model (``nn.BatchNorm``) with a jitted ``train_step`` called from a
    Python loop, the batch taken by indexing the on-device training array with a host index
    array (the flax examples' style); (b′) the same with the gather inside the jitted step;
(c) the same flax model and step in a ``lax.scan`` over 500-step chunks (a stronger peer);
(d) PyTorch eager, ``nn.BatchNorm1d``, CPU, its default thread count; (d′) one thread;
(e) bnreg with 5 seeds in one program (5 members, vmapped), aggregate member-steps/s.

XLA:CPU threading settings are compared for bnreg's engine (1 and 5 members) in fresh worker
processes (XLA reads its flags, and its thread pool takes the process's CPU affinity, when the
backend starts): the defaults; Eigen's multi-threading off; the process pinned to one core
(``taskset``, and ``os.sched_setaffinity`` from inside the process); two host devices
(``--xla_force_host_platform_device_count=2``) with the member axis sharded over them; and two
processes pinned to one core each, the members split between them.

Every implementation and every variant is compiled and warmed up first; then all of them take
turns (round robin; the workers are driven turn by turn over a pipe), each running ``--steps``
steps per turn, ``--repeats`` rounds. Rates are the median turn, and every row saw the same
background load. GFLOP/s counts the forward+backward matrix products analytically
(:func:`benchmarks.common.matmul_flops_per_step`); the peak is a 2048×2048 float32 matmul in jax,
measured in the same rounds.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.train_throughput          # everything, ~6 min on 2 cores
  .venv/bin/python -m benchmarks.train_throughput --steps 500 --repeats 2 --variants default

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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from benchmarks import common
from benchmarks.common import Turn, peak_matmul_runner, timed_turn
from bnreg import engine
from bnreg.config import override
from bnreg.engine.devices import shard_members
from bnreg.models import build_model
from experiments.bn_mnist import NETS, get_config

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

Runner = Callable[[int], None]  # runs n training steps and blocks until they are done
# Steps per compiled call of the scan-fused runners: the BN study's eval_every, so that per-chunk
# costs weigh as much as in a real run. Turns must be a multiple of it.
CHUNK_STEPS = 500


# --------------------------------------------------------------------------------------------
# (a, e) bnreg
# --------------------------------------------------------------------------------------------


def bnreg_config(seeds: list[int], overrides: dict[str, Any] | None = None) -> Any:
    """The engine config of the BN study's BN net (``experiments/bn_mnist.py``: its
    ``get_config()`` with ``NETS["bn"]``) at the benchmark's learning rate, ``seeds`` as the
    members, plus ``overrides`` (dotted keys, :func:`bnreg.config.override`)."""
    return override(get_config(), {
        **NETS["bn"],
        "sweep.learning_rate": (common.LEARNING_RATE,),
        "sweep.seed": tuple(seeds),
        **(overrides or {}),
    })


def bnreg_network(config: Any) -> tuple[engine.Network, engine.Members]:
    """bnreg's network (model, task, optimizer factory) and members of an engine config."""
    members = engine.members_from_config(config)
    model = build_model(config.model, (common.INPUT_SIZE,), common.NUM_CLASSES)
    network = engine.Network(
        model, engine.build_task(config.task), engine.build_optimizer(config.optimizer, members)
    )
    return network, members


def bnreg_config_runner(
    images: np.ndarray, labels: np.ndarray, config: Any, *, shard: bool = False
) -> tuple[Runner, Callable[..., Any]]:
    """The members of ``config`` in scan-fused chunks of ``CHUNK_STEPS``
    (:func:`bnreg.engine.make_train_chunk`, the whole split, no per-member subsets), the data
    order carried from chunk to chunk as ``train_and_evaluate`` does; with ``shard``, the member
    axis sharded over the local devices (:func:`bnreg.engine.devices.shard_members`). Returns
    the runner and the jitted chunk (to count its compilations)."""
    network, members = bnreg_network(config)
    sampler = engine.Sampler(num_examples=len(images), batch_size=config.batch_size)
    device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
    state = engine.init_members(network, members, device_images[:1])
    data_order = sampler.empty_order(len(members))
    if shard:
        devices = jax.local_devices()
        state = shard_members(state, devices)
        data_order = shard_members(data_order, devices)
    chunk = engine.make_train_chunk(network, sampler)
    holder = [state, data_order]

    def run(num_steps: int) -> None:
        for _ in range(num_steps // CHUNK_STEPS):
            holder[0], holder[1], losses = chunk(
                holder[0], holder[1], device_images, device_labels, None, CHUNK_STEPS
            )
        losses.block_until_ready()

    return run, chunk


def bnreg_runner(
    images: np.ndarray,
    labels: np.ndarray,
    seeds: list[int],
    *,
    shard: bool = False,
) -> Runner:
    """bnreg's scan-fused chunks (of ``CHUNK_STEPS``) training ``len(seeds)`` members of the BN
    net (``config.sweep.seed``), the data order carried from chunk to chunk as
    ``train_and_evaluate`` does. With ``shard``, the members are padded to a multiple of the
    device count and sharded (:func:`bnreg.engine.devices.shard_members`)."""
    if shard:
        padding = -len(seeds) % jax.device_count()
        seeds = seeds + [max(seeds) + 1 + i for i in range(padding)]
    run, _ = bnreg_config_runner(images, labels, bnreg_config(seeds), shard=shard)
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
    variables = model.init(jax.random.key(seed), jnp.zeros((1, common.INPUT_SIZE)), train=False)
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
    transfer of ``(CHUNK_STEPS, 60)`` int32 per chunk); data on device."""
    device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
    indices = host_batch_indices(len(images))

    def chunk(state, all_images, all_labels, batches):
        def body(state, batch):
            return flax_train_step(state, all_images[batch], all_labels[batch])

        return jax.lax.scan(body, state, batches)

    compiled = jax.jit(chunk, donate_argnums=0)
    holder = [flax_state()]

    def run(num_steps: int) -> None:
        for _ in range(num_steps // CHUNK_STEPS):
            batches = jnp.asarray(np.stack([next(indices) for _ in range(CHUNK_STEPS)]))
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
# Measurement: turns, taken round robin by every implementation and every variant
# --------------------------------------------------------------------------------------------


PEAK_FLOPS_PER_TURN = 8 * 2 * 2048**3


def gflops(member_steps_per_second: float) -> float:
    return member_steps_per_second * common.matmul_flops_per_step() / 1e9


# Threading variants, each in fresh worker process(es): XLA reads its flags, and the thread pool
# takes the process's CPU affinity, when the backend starts.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"description": "XLA defaults: 2 cores, one host device"},
    "eigen_off": {
        "description": "`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`",
        "xla_flags": "--xla_cpu_multi_thread_eigen=false",
    },
    "taskset_1core": {
        "description": "`taskset -c 0`: the process pinned to one core",
        "taskset": "0",
    },
    "affinity_1core": {
        "description": "`os.sched_setaffinity(0, {0})` in-process before the backend starts",
        "cpus": [0],
    },
    "2dev_sharded": {
        "description": "`--xla_force_host_platform_device_count=2`, member axis sharded "
        "(5 members padded to 6)",
        "xla_flags": "--xla_force_host_platform_device_count=2",
        "shard": True,
    },
    "2dev_sharded_eigen_off": {
        "description": "2 host devices, members sharded, Eigen multi-threading off",
        "xla_flags": "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false",
        "shard": True,
    },
    "pinned_pair": {
        "description": "two processes pinned to core 0 / core 1 (`sched_setaffinity`), the "
        "members split 3 + 2, running at the same time",
        "pair": True,
    },
}


def worker(args: argparse.Namespace) -> None:
    """A variant's worker: builds and warms its runners, then serves ``run NAME STEPS`` turns
    from stdin (answering ``TURN seconds cpu_seconds``) until ``quit``; then prints
    ``RESULT {json}``."""
    if args.cpus:
        # Threads inherit the creating thread's affinity; XLA's pool starts with the backend.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    images, labels = common.synthetic_mnist()
    seeds = [int(s) for s in args.seeds.split(",")]
    runners = {}
    if args.single:
        runners["single"] = bnreg_runner(images, labels, [0])
        runners["peak"] = peak_matmul_runner()
    runners["many"] = bnreg_runner(images, labels, seeds, shard=args.shard)
    for run in runners.values():
        run(args.steps)
    print("READY", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            break
        turn = timed_turn(runners[command[1]], int(command[2]))
        print(f"TURN {turn.seconds} {turn.cpu_seconds}", flush=True)
    result = {
        "devices": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "thread_affinities": common.thread_affinities(),
        "members": len(seeds),
    }
    print("RESULT " + json.dumps(result), flush=True)


class RemoteWorker:
    """A worker subprocess driven turn by turn over its stdin/stdout.

    ``repo`` is the tree the worker runs from (its cwd and the head of its ``PYTHONPATH``) and
    ``module`` the worker's module there: another checkout's ``benchmarks.train_throughput``
    serves the same protocol (``benchmarks/engine_ab.py``); ``extra`` are further arguments."""

    def __init__(
        self,
        args: argparse.Namespace,
        seeds: list[int],
        spec: dict[str, Any],
        *,
        single: bool,
        cpus: list[int] | None = None,
        repo: Path = REPO,
        module: str = "benchmarks.train_throughput",
        extra: Sequence[str] = (),
    ) -> None:
        command = [
            sys.executable,
            "-m",
            module,
            "--worker",
            "--steps",
            str(args.steps),
            "--seeds",
            ",".join(map(str, seeds)),
        ]
        if single:
            command.append("--single")
        if spec.get("shard"):
            command.append("--shard")
        cpus = cpus or spec.get("cpus")
        if cpus:
            command += ["--cpus", ",".join(map(str, cpus))]
        if spec.get("taskset"):
            if shutil.which("taskset") is None:
                raise RuntimeError("taskset (util-linux) is not installed; drop this variant.")
            command = ["taskset", "-c", spec["taskset"], *command]
        command += list(extra)
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        if spec.get("xla_flags"):
            env["XLA_FLAGS"] = spec["xla_flags"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
        self.log = tempfile.TemporaryFile(mode="w+")
        self.members = len(seeds)
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=repo,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )

    def _expect(self, prefix: str) -> str:
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        self.log.seek(0)
        raise RuntimeError(f"worker exited before {prefix.strip()}:\n{self.log.read()[-3000:]}")

    def wait_ready(self) -> None:
        self._expect("READY")

    def start(self, name: str, steps: int) -> None:
        self.process.stdin.write(f"run {name} {steps}\n")
        self.process.stdin.flush()

    def finish(self) -> Turn:
        seconds, cpu = self._expect("TURN ").split()
        return Turn(float(seconds), float(cpu))

    def close(self) -> dict[str, Any]:
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        result = json.loads(self._expect("RESULT "))
        self.process.wait()
        return result


def take_turn(entry: tuple[Any, ...], steps: int) -> Turn:
    """One turn of a schedule entry: a local runner, or runner ``name`` on remote worker(s),
    which start together and are timed until the last one finishes."""
    if entry[0] == "local":
        return timed_turn(entry[1], steps)
    _, workers, name = entry
    for remote in workers:
        remote.start(name, steps)
    turns = [remote.finish() for remote in workers]
    return Turn(max(t.seconds for t in turns), sum(t.cpu_seconds for t in turns))


def round_robin(
    schedule: dict[str, tuple[Any, ...]], steps: int, repeats: int
) -> dict[str, list[Turn]]:
    """``repeats`` rounds; in each, every entry takes one turn of ``steps`` steps in order."""
    turns: dict[str, list[Turn]] = {label: [] for label in schedule}
    for round_index in range(repeats):
        for label, entry in schedule.items():
            turns[label].append(take_turn(entry, steps))
        print(
            f"round {round_index + 1}/{repeats} (load {os.getloadavg()[0]:.2f}): "
            + ", ".join(f"{label} {steps / t[-1].seconds:.0f}/s" for label, t in turns.items()),
            flush=True,
        )
    return turns


def summarize(turns: list[Turn], work_per_turn: float) -> dict[str, Any]:
    """Median rate over turns, the CPU cores the turns used on average, and the raw turns."""
    return {
        "rate": common.median_rate([t.seconds for t in turns], work_per_turn),
        "cores_used": sum(t.cpu_seconds for t in turns) / sum(t.seconds for t in turns),
        "turns": [t._asdict() for t in turns],
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

PEERS = {
    "bnreg_1": "(a) bnreg, 1 run (scan-fused chunks of 500 steps)",
    "flax_loop": "(b) flax.linen nn.BatchNorm, jitted step in a Python loop, eager batch indexing",
    "flax_loop_gather": "(b′) flax.linen, jitted step in a Python loop, gather inside the step",
    "flax_scan": "(c) flax.linen step in lax.scan (chunks of 500 steps)",
    "torch_default": "(d) PyTorch eager nn.BatchNorm1d, CPU, default threads",
    "torch_1thread": "(d′) PyTorch eager, torch.set_num_threads(1)",
    "bnreg_5": "(e) bnreg, 5 seeds in one program (aggregate)",
}


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}×" if value and base else "—"


def _rate(rates: dict[str, Any], name: str) -> float | None:
    return rates[name]["member_steps_per_s"] if name in rates else None


def turn_range(entry: dict[str, Any], work: float) -> str:
    rates = [work / turn["seconds"] for turn in entry["turns"]]
    return f"{min(rates):.0f}–{max(rates):.0f}"


def write_report(result: dict[str, Any]) -> str:
    """The markdown tables of ``result`` (rows that were not run are left out)."""
    rates = result["rates"]
    members = result["members"]
    torch_rate = _rate(rates, "torch_default")
    torch_1 = _rate(rates, "torch_1thread")
    flax_rate = _rate(rates, "flax_loop")
    peak = rates["peak"]["gflops"]
    rows = []
    for name, description in PEERS.items():
        if name not in rates:
            continue
        entry = rates[name]
        rate = entry["member_steps_per_s"]
        rows.append(
            [
                description,
                entry["members"],
                f"{entry['steps_per_s']:.0f}",
                f"{rate:.0f}",
                turn_range(entry, result["steps"] * entry["members"]),
                _ratio(rate, torch_rate),
                _ratio(rate, torch_1),
                _ratio(rate, flax_rate),
                f"{gflops(rate):.1f}",
                f"{100 * gflops(rate) / peak:.0f}%",
                f"{entry['cores_used']:.2f}",
            ]
        )
    machine = result["machine"]
    lines = [
        "# Training throughput: the BN paper's MNIST MLP",
        "",
        f"Measured {result['date']} on {machine['processor']} ({machine['cpus']} cores), "
        f"jax {result['versions']['jax']}, flax {result['versions']['flax']}, "
        f"torch {result['versions']['torch']} (default {result['torch_default_threads']} "
        f"threads). Load average (1/5/15 min) before: {result['loadavg_before']}, after: "
        f"{result['loadavg_after']}; other processes: {result['other_load']}. Every row took "
        f"{result['repeats']} turns of {result['steps']} steps, round robin with all the "
        "others (after warm-up/compilation); rates are the median turn, *turns* the slowest and "
        "fastest turn. *cores used* = the process's CPU seconds / wall seconds over its turns "
        "(how much of the 2 cores it got).",
        "",
        "784-100-100-100-10 sigmoid, BN before each sigmoid (no bias before BN), batch 60, SGD "
        "lr 0.1, N(0, 0.1²) init; synthetic binarized data 60000×784 on the device. GFLOP/s = "
        f"member-steps/s × {common.matmul_flops_per_step() / 1e6:.2f} MFLOP (forward+backward "
        "matmuls, analytic; XLA's `cost_analysis()` of one flax step says "
        f"{result['xla_cost_flops_per_step'] / 1e6:.2f} MFLOP incl. element-wise work). Peak: "
        f"2048² float32 matmul in jax, same process, **{peak:.0f} GFLOP/s** (XLA defaults).",
        "",
        common.markdown_table(
            [
                "implementation",
                "members",
                "steps/s",
                "member-steps/s",
                "turns",
                "vs PyTorch (default)",
                "vs PyTorch (1 thread)",
                "vs flax jit loop",
                "GFLOP/s",
                "of peak",
                "cores used",
            ],
            rows,
        ),
        "",
    ]
    bnreg_1, bnreg_5 = _rate(rates, "bnreg_1"), _rate(rates, "bnreg_5")

    def verdict(value: float | None, base: float | None, factor: float) -> str:
        if not value or not base:
            return "—"
        return f"**{value / base:.2f}×** ({'met' if value >= factor * base else 'NOT met'})"

    lines += [
        "Targets (XLA defaults, this process):",
        "",
        f"- bnreg 1 run ≥ 4× PyTorch eager (default threads): {verdict(bnreg_1, torch_rate, 4)}"
        f"; against PyTorch with 1 thread {_ratio(bnreg_1, torch_1)}.",
        f"- bnreg 1 run ≥ 1.0× flax jit loop: {verdict(bnreg_1, flax_rate, 1)}.",
        f"- bnreg {members} seeds ≥ 10× PyTorch single run, aggregate: "
        f"{verdict(bnreg_5, torch_rate, 10)}; against PyTorch with 1 thread "
        f"{_ratio(bnreg_5, torch_1)}.",
    ]
    if torch_rate:
        lines += [
            f"- Arithmetic limit: 4× PyTorch is {gflops(4 * torch_rate):.0f} GFLOP/s of 60-row "
            f"matmuls ({100 * gflops(4 * torch_rate) / peak:.0f}% of the 2048² peak); 10× is "
            f"{gflops(10 * torch_rate):.0f} GFLOP/s ({100 * gflops(10 * torch_rate) / peak:.0f}%"
            " of the peak).",
        ]
    lines.append("")
    variants = result.get("variants", {})
    if variants:
        base = variants.get("default", {})
        rows = []
        for name, variant in variants.items():
            single, many = variant.get("single_steps_per_s"), variant["many_member_steps_per_s"]
            rows.append(
                [
                    name,
                    variant["description"],
                    f"{single:.0f}" if single else "—",
                    _ratio(single, base.get("single_steps_per_s")),
                    _ratio(single, torch_rate),
                    f"{many:.0f}",
                    _ratio(many, base.get("many_member_steps_per_s")),
                    _ratio(many, torch_rate),
                    f"{gflops(many):.1f}",
                    f"{variant['peak_gflops']:.0f}" if variant.get("peak_gflops") else "—",
                    f"{variant['many_cores_used']:.2f}",
                    " ".join(str(a) for a in variant["thread_affinities"]),
                ]
            )
        lines += [
            f"## XLA:CPU threading settings for bnreg (1 run, and {members} seeds in one "
            "program), each in fresh worker process(es), in the same round robin",
            "",
            common.markdown_table(
                [
                    "variant",
                    "setting",
                    "1 run steps/s",
                    "vs default",
                    "vs PyTorch",
                    f"{members} seeds member-steps/s",
                    "vs default",
                    "vs PyTorch",
                    "GFLOP/s",
                    "peak GFLOP/s (this setting)",
                    f"cores used ({members} seeds)",
                    "threads' CPU sets",
                ],
                rows,
            ),
            "",
            "`intra_op_parallelism_threads` is a field of XLA's `ExecutionOptions` proto, not an "
            'XLA flag: alone in `XLA_FLAGS` it aborts ("Could not open file … to read flags"), '
            "after a `--` flag it is silently ignored, so it is not a variant here.",
            "",
        ]
    return "\n".join(lines)


def other_load(own: Sequence[str] = ("train_throughput",)) -> str:
    """The other busy processes (top CPU users), to record what the numbers competed with; a
    process whose command line names one of ``own`` is this benchmark's."""
    try:
        output = subprocess.run(
            ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[1:]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    mine = {os.getpid()}
    busy = []
    for line in output:
        pid, pcpu, args = line.split(None, 2)
        if int(pid) not in mine and float(pcpu) >= 20 and not any(o in args for o in own):
            busy.append(f"{args[:70]} ({pcpu}% CPU)")
    return "; ".join(busy[:4]) or "none above 20% CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per timed turn")
    parser.add_argument("--repeats", type=int, default=5, help="timed turns per implementation")
    parser.add_argument("--members", type=int, default=5, help="seeds in one bnreg program")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated threading variants (fresh worker processes); '' for none",
    )
    parser.add_argument(
        "--peers",
        default=",".join([*PEERS, "peak"]),
        help="comma-separated in-process rows to run (peak is always run)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "train_throughput",
        help="results path without suffix (.json and .md are written)",
    )
    # Worker mode (internal).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps % CHUNK_STEPS:
        parser.error(f"--steps must be a multiple of {CHUNK_STEPS} (the chunk size).")
    if args.worker:
        worker(args)
        return

    import flax
    import torch

    seeds = list(range(args.members))
    variant_names = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(variant_names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine_load(),
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "torch": torch.__version__},
        "torch_default_threads": torch.get_num_threads(),
        "steps": args.steps,
        "repeats": args.repeats,
        "members": args.members,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "other_load": other_load(),
        "matmul_flops_per_step": common.matmul_flops_per_step(),
    }

    # Workers first: they compile while this process does.
    workers: dict[str, list[RemoteWorker]] = {}
    for name in variant_names:
        spec = VARIANTS[name]
        if spec.get("pair"):
            half = (len(seeds) + 1) // 2
            workers[name] = [
                RemoteWorker(args, part, spec, single=False, cpus=[core])
                for core, part in enumerate((seeds[:half], seeds[half:]))
            ]
        else:
            workers[name] = [RemoteWorker(args, seeds, spec, single=True)]

    images, labels = common.synthetic_mnist()
    result["xla_cost_flops_per_step"] = flax_step_cost_flops(images, labels)
    factories: dict[str, Callable[[], Runner]] = {
        "bnreg_1": lambda: bnreg_runner(images, labels, [0]),
        "flax_loop": lambda: flax_loop_runner(images, labels, gather_in_step=False),
        "flax_loop_gather": lambda: flax_loop_runner(images, labels, gather_in_step=True),
        "flax_scan": lambda: flax_scan_runner(images, labels),
        "torch_default": lambda: torch_runner(images, labels, threads=None),
        "torch_1thread": lambda: torch_runner(images, labels, threads=1),
        "bnreg_5": lambda: bnreg_runner(images, labels, seeds),
        "peak": peak_matmul_runner,
    }
    wanted = {name for name in args.peers.split(",") if name} | {"peak"}
    unknown = sorted(wanted - set(factories))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {list(factories)}")
    local = {name: make() for name, make in factories.items() if name in wanted}
    for name, run in local.items():
        print(f"warm-up {name}: {timed_turn(run, args.steps).seconds:.1f} s", flush=True)
    for remote in (w for group in workers.values() for w in group):
        remote.wait_ready()
    print("all workers ready", flush=True)

    schedule: dict[str, tuple[Any, ...]] = {name: ("local", run) for name, run in local.items()}
    for name, group in workers.items():
        if len(group) == 1:
            schedule[f"{name}/single"] = ("remote", group, "single")
            schedule[f"{name}/peak"] = ("remote", group, "peak")
        schedule[f"{name}/many"] = ("remote", group, "many")
    turns = round_robin(schedule, args.steps, args.repeats)

    result["rates"] = {}
    for name in local:
        if name == "peak":
            summary = summarize(turns[name], PEAK_FLOPS_PER_TURN)
            result["rates"][name] = {"gflops": summary["rate"] / 1e9, **summary}
            continue
        count = args.members if name.startswith("bnreg_5") else 1
        summary = summarize(turns[name], args.steps)
        result["rates"][name] = {
            "members": count,
            "steps_per_s": summary["rate"],
            "member_steps_per_s": summary["rate"] * count,
            **summary,
        }
    result["variants"] = {}
    for name, group in workers.items():
        infos = [remote.close() for remote in group]
        many = summarize(turns[f"{name}/many"], args.steps * args.members)
        variant = {
            "description": VARIANTS[name]["description"],
            "workers": infos,
            "thread_affinities": sorted({tuple(a) for i in infos for a in i["thread_affinities"]}),
            "many_member_steps_per_s": many["rate"],
            "many_cores_used": many["cores_used"],
            "many_turns": many["turns"],
        }
        if f"{name}/single" in turns:
            single = summarize(turns[f"{name}/single"], args.steps)
            variant["single_steps_per_s"] = single["rate"]
            variant["single_turns"] = single["turns"]
            variant["peak_gflops"] = (
                summarize(turns[f"{name}/peak"], PEAK_FLOPS_PER_TURN)["rate"] / 1e9
            )
        result["variants"][name] = variant
    common.write_results(args.output, result, write_report)


if __name__ == "__main__":
    main()
