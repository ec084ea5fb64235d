"""Training throughput of the BN paper's MNIST MLP: bnreg against its peers, side by side.

The network (784-100-100-100-10 sigmoid, BN before each sigmoid, no dense bias before BN,
N(0, 0.1²) init, plain SGD at lr 0.1, batches of 60) is trained on the same synthetic
binarized-MNIST-shaped data (60000×784) by

(a) bnreg, one run: the BN study's engine config (``experiments/bn_mnist.py``'s BN net), one
    member, ``Engine.train`` in calls of 500 steps as the BN study makes them (its
    ``eval_every``), the data order carried from call to call;
(b) a standard flax.linen model (``nn.BatchNorm``) with a jitted ``train_step`` called from a
    Python loop, the batch taken by indexing the on-device training array with a host index
    array (the flax examples' style); (b′) the same with the gather inside the jitted step;
(c) the same flax model and step in a ``lax.scan`` over 500-step chunks (a stronger peer);
(d) PyTorch eager, ``nn.BatchNorm1d``, CPU, its default thread count; (d′) one thread;
(e) bnreg with 5 seeds in one program (5 members, vmapped), aggregate member-steps/s.

XLA:CPU threading settings are compared for bnreg's engine (1 and 5 members) in fresh worker
processes (XLA reads its flags, and its thread pool takes the process's CPU affinity, when the
backend starts), driven turn by turn over a pipe: the defaults; Eigen's multi-threading off;
the process pinned to one core (``taskset``, and ``os.sched_setaffinity`` from inside); two host
devices (``--xla_force_host_platform_device_count=2``) with the members spread over them
(``bnreg.engine.build`` on both devices: 5 members padded to 6); and two processes pinned to one
core each, the members split between them.

All rows take turns (``benchmarks.runner``), every row seeing the same background load.
GFLOP/s counts the forward+backward matrix products analytically
(:func:`benchmarks.common.matmul_flops_per_step`); the peak is a 2048² float32 matmul, measured
in the same rounds.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.train_throughput          # everything, ~6 min on 2 cores
  .venv/bin/python -m benchmarks.train_throughput --steps 500 --repeats 2 --variants default
  .venv/bin/python -m benchmarks.train_throughput --smoke --out /tmp/smoke   # seconds

Results: ``<out>/train_throughput.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from benchmarks import common, report, runner, torch_peers
from benchmarks.runner import Peer, Turn

NAME = "train_throughput"
CHUNK_STEPS = 500  # steps per compiled call: the BN study's eval_every
SMOKE = {"steps": 20, "repeats": 2, "members": 3, "examples": 1200, "peak_size": 128,
         "variants": "2dev_sharded", "peers": "bnreg_1,flax_loop,flax_scan"}
PEERS = {
    "bnreg_1": "(a) bnreg, 1 run (Engine.train, calls of 500 steps)",
    "flax_loop": "(b) flax.linen nn.BatchNorm, jitted step in a Python loop, eager batch indexing",
    "flax_loop_gather": "(b′) flax.linen, jitted step in a Python loop, gather inside the step",
    "flax_scan": "(c) flax.linen step in lax.scan (chunks of 500 steps)",
    "torch_default": "(d) PyTorch eager nn.BatchNorm1d, CPU, default threads",
    "torch_1thread": "(d′) PyTorch eager, torch.set_num_threads(1)",
    "bnreg_5": "(e) bnreg, the seeds in one program (aggregate)",
    "peak": "peak: float32 jnp.matmul",
}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"description": "XLA defaults: 2 cores, one host device"},
    "eigen_off": {"description": "`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`",
                  "xla_flags": "--xla_cpu_multi_thread_eigen=false"},
    "taskset_1core": {"description": "`taskset -c 0`: the process pinned to one core",
                      "taskset": "0"},
    "affinity_1core": {"description": "`os.sched_setaffinity(0, {0})` in-process before the "
                       "backend starts", "cpus": [0]},
    "2dev_sharded": {"description": "`--xla_force_host_platform_device_count=2`, the members "
                     "spread over both (padded to a multiple of 2)",
                     "xla_flags": "--xla_force_host_platform_device_count=2", "shard": True},
    "2dev_sharded_eigen_off": {
        "description": "2 host devices, members spread, Eigen multi-threading off",
        "xla_flags": "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false",
        "shard": True},
    "pinned_pair": {"description": "two processes pinned to core 0 / core 1 "
                    "(`sched_setaffinity`), the members split between them, at the same time",
                    "pair": True},
}
GFLOP_PER_MEMBER_STEP = common.matmul_flops_per_step() / 1e9


# --------------------------------------------------------------------------------------------
# (a, e) bnreg
# --------------------------------------------------------------------------------------------


def bnreg_peer(data: Any, seeds: Sequence[int], chunk: int, *, shard: bool = False) -> Peer:
    """The BN study's BN net (``experiments.bn_mnist``) at lr 0.1, ``seeds`` as its members, on
    the first local device, or with ``shard`` on all of them (the members padded to a multiple
    of the device count and spread over them)."""
    from bnreg.config import override
    from experiments.bn_mnist import get_config

    devices = jax.local_devices() if shard else jax.local_devices()[:1]
    seeds = list(seeds) + [max(seeds) + 1 + i for i in range(-len(seeds) % len(devices))]
    config = override(get_config(), {"model.norm": "batch", "sweep.seed": tuple(seeds),
                                     "sweep.learning_rate": (common.LEARNING_RATE,),
                                     "progress": False})
    return runner.engine_peer(config, data=data, chunk=chunk, devices=devices)


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
            x = nn.BatchNorm(use_running_average=not train, momentum=common.BN_MOMENTUM,
                             epsilon=common.BN_EPSILON)(x)
            x = nn.sigmoid(x)
        return nn.Dense(common.NUM_CLASSES, kernel_init=init)(x)


class FlaxState(train_state.TrainState):
    batch_stats: Any


def flax_state(seed: int = 0) -> FlaxState:
    model = FlaxMLP()
    variables = model.init(jax.random.key(seed), jnp.zeros((1, common.INPUT_SIZE)), train=False)
    return FlaxState.create(apply_fn=model.apply, params=variables["params"],
                            batch_stats=variables["batch_stats"],
                            tx=optax.sgd(common.LEARNING_RATE))


def flax_train_step(state: FlaxState, images: jax.Array, labels: jax.Array):
    """The flax examples' train step: BN in training mode, ``batch_stats`` updated."""

    def loss_fn(params):
        logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                         images, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"]), loss


def flax_loop_peer(images: np.ndarray, labels: np.ndarray, *, gather_in_step: bool) -> Peer:
    """(b) a jitted step per Python iteration. Without ``gather_in_step`` the batch is
    ``device_images[host_indices]`` (an eager gather, the flax examples' style); with it, the
    indices go into the jitted step, which gathers."""
    device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
    indices = common.host_batch_indices(len(images), common.BATCH_SIZE)
    holder = [flax_state()]
    if gather_in_step:
        step = jax.jit(lambda state, x, y, batch: flax_train_step(state, x[batch], y[batch]),
                       donate_argnums=0)
    else:
        step = jax.jit(flax_train_step, donate_argnums=0)

    def run(num_steps: int) -> None:
        state = holder[0]
        for _ in range(num_steps):
            batch = next(indices)
            if gather_in_step:
                state, loss = step(state, device_images, device_labels, batch)
            else:
                state, loss = step(state, device_images[batch], device_labels[batch])
        loss.block_until_ready()
        holder[0] = state

    return Peer(run)


def flax_scan_peer(images: np.ndarray, labels: np.ndarray, chunk_steps: int) -> Peer:
    """(c) the flax step in a ``lax.scan`` over a chunk's batch indices (drawn on the host, one
    transfer of ``(chunk_steps, 60)`` int32 per chunk); data on device."""
    device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
    indices = common.host_batch_indices(len(images), common.BATCH_SIZE)

    def chunk(state, all_images, all_labels, batches):
        def body(state, batch):
            return flax_train_step(state, all_images[batch], all_labels[batch])

        return jax.lax.scan(body, state, batches)

    compiled = jax.jit(chunk, donate_argnums=0)
    holder = [flax_state()]

    def run(num_steps: int) -> None:
        for _ in range(num_steps // chunk_steps):
            batches = jnp.asarray(np.stack([next(indices) for _ in range(chunk_steps)]))
            holder[0], losses = compiled(holder[0], device_images, device_labels, batches)
        losses.block_until_ready()

    return Peer(run)


def flax_step_cost_flops(images: np.ndarray, labels: np.ndarray) -> float | None:
    """XLA's own FLOP count of one flax train step (``compile().cost_analysis()``), to check
    the analytic count; includes element-wise work."""
    batch = slice(0, common.BATCH_SIZE)
    cost = jax.jit(flax_train_step).lower(flax_state(), jnp.asarray(images[batch]),
                                          jnp.asarray(labels[batch])).compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


# --------------------------------------------------------------------------------------------
# Threading variants: worker processes, driven turn by turn over a pipe
# --------------------------------------------------------------------------------------------


def thread_affinities() -> list[list[int]]:
    """The distinct CPU sets of this process's threads (``/proc/self/task``): pinning reached
    every thread, including the XLA thread pool."""
    sets = set()
    for task in os.listdir("/proc/self/task"):
        try:
            sets.add(tuple(sorted(os.sched_getaffinity(int(task)))))
        except OSError:
            continue
    return [list(s) for s in sorted(sets)]


def worker(args: argparse.Namespace, chunk: int) -> None:
    """A variant's worker: builds and warms its peers, then serves ``run NAME STEPS`` turns from
    stdin (answering ``TURN seconds cpu_seconds``) until ``quit``; then prints ``RESULT
    {json}``."""
    if args.cpus:  # threads inherit it; XLA's pool starts with the backend
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    data = common.synthetic_run_data(args.examples, 100)
    seeds = [int(s) for s in args.seeds.split(",")]
    peers = {}
    if args.single:
        peers["single"] = bnreg_peer(data, [0], chunk)
        peers["peak"] = runner.peak_peer(args.peak_size)
    peers["many"] = bnreg_peer(data, seeds, chunk, shard=args.shard)
    for peer in peers.values():
        peer.run(args.steps)
    print("READY", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            break
        turn = runner.timed_turn(peers[command[1]].run, int(command[2]))
        print(f"TURN {turn.seconds} {turn.cpu_seconds}", flush=True)
    print("RESULT " + json.dumps({
        "devices": jax.device_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "thread_affinities": thread_affinities(),
        "members": len(peers["many"].engine.members),
        "mesh": dict(peers["many"].engine.layout.mesh.shape)}), flush=True)


class RemoteWorker:
    """A worker subprocess (:func:`worker`) of one variant."""

    def __init__(self, args: argparse.Namespace, seeds: list[int], spec: dict[str, Any], *,
                 single: bool, cpus: list[int] | None = None) -> None:
        command = [sys.executable, "-m", "benchmarks.train_throughput", "--worker",
                   "--steps", str(args.steps), "--seeds", ",".join(map(str, seeds)),
                   "--examples", str(args.examples), "--peak-size", str(args.peak_size)]
        command += ["--single"] * single + ["--shard"] * bool(spec.get("shard"))
        cpus = cpus or spec.get("cpus")
        if cpus:
            command += ["--cpus", ",".join(map(str, cpus))]
        if spec.get("taskset"):
            if shutil.which("taskset") is None:
                raise RuntimeError("taskset (util-linux) is not installed; drop this variant.")
            command = ["taskset", "-c", spec["taskset"], *command]
        env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
        if spec.get("xla_flags"):
            env["XLA_FLAGS"] = spec["xla_flags"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.REPO),
                                                          env.get("PYTHONPATH")]))
        self.log = tempfile.TemporaryFile(mode="w+")
        self.ready = False
        self.process = subprocess.Popen(command, env=env, cwd=common.REPO, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log)

    def _expect(self, prefix: str) -> str:
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        self.log.seek(0)
        raise RuntimeError(f"worker exited before {prefix.strip()}:\n{self.log.read()[-3000:]}")

    def start(self, name: str, steps: int) -> None:
        if not self.ready:  # it builds and warms up its peers first
            self._expect("READY")
            self.ready = True
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


def remote_peer(group: list[RemoteWorker], name: str, **peer: Any) -> Peer:
    """Peer ``name`` of the workers of ``group``, which start together; a turn lasts until the
    last one finishes, and uses their CPU seconds together."""

    def run(num_steps: int) -> Turn:
        for remote in group:
            remote.start(name, num_steps)
        turns = [remote.finish() for remote in group]
        return Turn(max(t.seconds for t in turns), sum(t.cpu_seconds for t in turns))

    return Peer(run, **peer)


# --------------------------------------------------------------------------------------------
# Main and report
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=2000, repeats=5)
    parser.add_argument("--members", type=int, default=5, help="seeds in one bnreg program")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated threading variants (worker processes); '' for none")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="comma-separated in-process rows (the peak always runs)")
    parser.add_argument("--examples", type=int, default=60_000, help="synthetic examples")
    parser.add_argument("--peak-size", type=int, default=2048, help="the peak's matmul size")
    for flag in ("--worker", "--single", "--shard"):  # a worker's (internal)
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    args = common.parse(parser, argv, SMOKE)
    chunk = min(CHUNK_STEPS, args.steps)
    if args.steps % chunk:
        parser.error(f"--steps must be a multiple of {CHUNK_STEPS} (the chunk), or below it.")
    if args.worker:
        worker(args, chunk)
        return
    variants = [name for name in args.variants.split(",") if name]
    wanted = [name for name in args.peers.split(",") if name] + ["peak"]
    unknown = sorted(set(variants) - set(VARIANTS)) + sorted(set(wanted) - set(PEERS))
    if unknown:
        parser.error(f"unknown variants or peers {unknown}; choose from {list(VARIANTS)}, "
                     f"{list(PEERS)}")
    torch, where = torch_peers.load(args.torch_path) if args.torch else (None, "off (--smoke)")
    seeds = list(range(args.members))
    workers: dict[str, list[RemoteWorker]] = {}  # first: they compile while this process does
    for name in variants:
        if VARIANTS[name].get("pair"):
            half = (len(seeds) + 1) // 2
            workers[name] = [RemoteWorker(args, part, VARIANTS[name], single=False, cpus=[core])
                             for core, part in enumerate((seeds[:half], seeds[half:]))]
        else:
            workers[name] = [RemoteWorker(args, seeds, VARIANTS[name], single=True)]
    data = common.synthetic_run_data(args.examples, 100)
    images = data.train.images.reshape(args.examples, -1)
    labels = data.train.labels
    peak_gflop = 8 * 2 * args.peak_size**3 / 1e9
    factories = {
        "bnreg_1": lambda: bnreg_peer(data, [0], chunk),
        "flax_loop": lambda: flax_loop_peer(images, labels, gather_in_step=False),
        "flax_loop_gather": lambda: flax_loop_peer(images, labels, gather_in_step=True),
        "flax_scan": lambda: flax_scan_peer(images, labels, chunk),
        "torch_default": lambda: torch_peers.bn_mlp_peer(torch, images, labels,
                                                         thread_count=None),
        "torch_1thread": lambda: torch_peers.bn_mlp_peer(torch, images, labels, thread_count=1),
        "bnreg_5": lambda: bnreg_peer(data, seeds, chunk),
        "peak": lambda: runner.peak_peer(args.peak_size),
    }
    peers: dict[str, Any] = {name: factories[name] for name in PEERS
                             if name in wanted and (torch or not name.startswith("torch"))}
    for name, group in workers.items():
        if len(group) == 1:
            peers[f"{name}/single"] = remote_peer(group, "single")
            peers[f"{name}/peak"] = remote_peer(group, "peak", work_per_turn=peak_gflop,
                                                unit="GFLOP/s")
        peers[f"{name}/many"] = remote_peer(group, "many", work_per_step=len(seeds),
                                            unit="member-steps/s")
    result = report.start(NAME, "Training throughput: the BN paper's MNIST MLP",
                          steps=args.steps, repeats=args.repeats, members=args.members,
                          chunk_steps=chunk, torch=where, peak_size=args.peak_size,
                          xla_cost_flops_per_step=flax_step_cost_flops(images, labels),
                          torch_default_threads=torch.get_num_threads() if torch else None)
    base = ("torch_default", "torch_1thread", "flax_loop")
    result["measurement"] = runner.measure(
        peers, args.steps, args.repeats,
        ratios=[(name, other) for name in ("bnreg_1", "bnreg_5") for other in base])
    result["workers"] = {name: [remote.close() for remote in group]
                         for name, group in workers.items()}
    describe(result)
    report.finish(result, args.out, args.name or NAME)


def describe(result: dict[str, Any]) -> None:
    """The report's text, tables and targets."""
    rows, ratios = result["measurement"]["rows"], result["measurement"]["ratios"]
    peak = rows["peak"]["rate"]

    def rate(name: str) -> float | None:
        return rows[name]["rate"] if name in rows else None

    def versus(value: float | None, base: str) -> float | None:
        return value / rate(base) if value and rate(base) else None

    shown = []
    for name, label in PEERS.items():
        if name in rows and name != "peak":
            row = rows[name]
            members = result["members"] if name == "bnreg_5" else 1
            shown.append({
                "row": label, "members": members, "steps": row["rate"] / members,
                "rate": row["rate"], "turns": [row["slowest"], row["fastest"]],
                **{base: versus(row["rate"], base)
                   for base in ("torch_default", "torch_1thread", "flax_loop")},
                "gflops": GFLOP_PER_MEMBER_STEP * row["rate"],
                "of_peak": 100 * GFLOP_PER_MEMBER_STEP * row["rate"] / peak,
                "cores": row["cores_used"]})
    cost = result["xla_cost_flops_per_step"]
    result["text"] = [
        f"784-100-100-100-10 sigmoid, BN before each sigmoid, batch 60, SGD lr 0.1, N(0, 0.1²) "
        f"init; synthetic binarized data on the device. Every row took {result['repeats']} "
        f"turns of {result['steps']} steps (bnreg: calls of {result['chunk_steps']}), round "
        "robin with all the others after a warm-up turn; *turns* are the slowest and fastest "
        "turn. GFLOP/s = member-steps/s × "
        f"{GFLOP_PER_MEMBER_STEP * 1e3:.2f} MFLOP (analytic; XLA's `cost_analysis()` of one "
        f"flax step: {cost / 1e6 if cost else float('nan'):.2f} MFLOP with element-wise work). "
        f"Peak: {result['peak_size']}² float32 matmul, same process, **{peak:.0f} GFLOP/s**. "
        f"PyTorch: {result['torch']} (default {result['torch_default_threads']} threads)."]
    result["tables"] = [report.table([
        ("row", "implementation", "{}"), ("members", "members", "{}"),
        ("steps", "steps/s", "{:.0f}"), ("rate", "member-steps/s", "{:.0f}"),
        ("turns", "turns", "{:.0f}–{:.0f}"),
        ("torch_default", "vs PyTorch (default)", "{:.2f}×"),
        ("torch_1thread", "vs PyTorch (1 thread)", "{:.2f}×"),
        ("flax_loop", "vs flax jit loop", "{:.2f}×"), ("gflops", "GFLOP/s", "{:.1f}"),
        ("of_peak", "of peak", "{:.0f}%"), ("cores", "cores used", "{:.2f}")], shown)]
    result["notes"] = [
        "bnreg 1 run ≥ 4× PyTorch eager (default threads): "
        f"{report.ratio_text(ratios.get('bnreg_1/torch_default'), 4)}; against 1 thread "
        f"{report.ratio_text(ratios.get('bnreg_1/torch_1thread'))}.",
        "bnreg 1 run ≥ 1.0× flax jit loop: "
        f"{report.ratio_text(ratios.get('bnreg_1/flax_loop'), 1)}.",
        f"bnreg {result['members']} seeds ≥ 10× PyTorch single run, aggregate: "
        f"{report.ratio_text(ratios.get('bnreg_5/torch_default'), 10)}.",
    ]
    variants = []
    default = {part: rate(f"default/{part}") for part in ("single", "many")}
    for name, infos in result["workers"].items():
        single, many = rate(f"{name}/single"), rows[f"{name}/many"]
        variants.append({
            "variant": name, "setting": VARIANTS[name]["description"], "single": single,
            "single_default": versus(single, "default/single") if default["single"] else None,
            "single_torch": versus(single, "torch_default"), "many": many["rate"],
            "many_default": versus(many["rate"], "default/many") if default["many"] else None,
            "many_torch": versus(many["rate"], "torch_default"),
            "gflops": GFLOP_PER_MEMBER_STEP * many["rate"], "peak": rate(f"{name}/peak"),
            "cores": many["cores_used"],
            "cpus": " ".join(str(tuple(a)) for a in sorted(
                {tuple(a) for info in infos for a in info["thread_affinities"]}))})
    if variants:
        members = result["members"]
        result["tables"].append(report.table([
            ("variant", "variant", "{}"), ("setting", "setting", "{}"),
            ("single", "1 run steps/s", "{:.0f}"), ("single_default", "vs default", "{:.2f}×"),
            ("single_torch", "vs PyTorch", "{:.2f}×"),
            ("many", f"{members} seeds member-steps/s", "{:.0f}"),
            ("many_default", "vs default", "{:.2f}×"), ("many_torch", "vs PyTorch", "{:.2f}×"),
            ("gflops", "GFLOP/s", "{:.1f}"), ("peak", "peak GFLOP/s (this setting)", "{:.0f}"),
            ("cores", f"cores used ({members} seeds)", "{:.2f}"),
            ("cpus", "threads' CPU sets", "{}")], variants,
            title=f"XLA:CPU threading settings for bnreg (1 run, and {members} seeds in one "
                  "program), each in fresh worker process(es), in the same round robin"))


if __name__ == "__main__":
    main()
