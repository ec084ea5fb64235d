"""The benchmarks' one measurement: build every peer, warm it up, then let the peers take turns,
round robin, and report per peer its median turn and per pair of peers the ratio in each round.

A *peer* (:class:`Peer`) is anything that trains ``n`` steps when called and blocks until they
are done. :func:`measure` builds all of them (a builder may take seconds: compilation starts
there), runs one warm-up turn each, then ``rounds`` rounds in which every peer takes one timed
turn of ``steps`` steps — every other round in reverse order, so that neither of two
neighbours always goes first, and every peer sees the same background load. A peer's rate is
its work over its median turn (the slower middle one for an even count); its *turns* are the
slowest and fastest. The per-round ratio of two peers is the median over rounds of the ratio of
their rates in the same round: on a shared machine the load moves between rounds much more than
between two adjacent turns, so it is the robust comparison; the ratio of the medians is kept
beside it.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple


class Turn(NamedTuple):
    """One timed call: wall seconds, CPU seconds used meanwhile, and what the call reported."""

    seconds: float
    cpu_seconds: float
    info: dict[str, Any] | None = None


@dataclasses.dataclass
class Peer:
    """A contender: ``run(n)`` trains ``n`` steps and blocks until they are done; it may return
    its own :class:`Turn` (a worker process timing itself), else it is timed here.

    ``work_per_step`` (members: member-steps) or ``work_per_turn`` (a fixed amount, e.g. the
    matmul peak's GFLOP) makes the rate; ``info`` (e.g. the last loss) is copied into the row
    after the turns; ``engine`` is the bnreg engine behind the peer, if any."""

    run: Callable[[int], Turn | None]
    label: str = ""
    work_per_step: float = 1.0
    work_per_turn: float | None = None
    unit: str = "steps/s"
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    engine: Any = None

    def work(self, steps: int) -> float:
        return self.work_per_turn if self.work_per_turn is not None else self.work_per_step * steps


def timed_turn(run: Callable[[int], Turn | None], steps: int) -> Turn:
    """``run(steps)``, timed in wall and process CPU seconds (unless it times itself)."""
    before_wall, before = time.perf_counter(), os.times()
    reported = run(steps)
    after_wall, after = time.perf_counter(), os.times()
    if isinstance(reported, Turn):
        return reported
    cpu = (after.user + after.system) - (before.user + before.system)
    return Turn(after_wall - before_wall, cpu)


def median_index(seconds: Sequence[float]) -> int:
    """The index of the median turn (the slower of the middle two for an even count)."""
    order = sorted(range(len(seconds)), key=lambda index: seconds[index])
    return order[len(order) // 2]


def summarize(turns: Sequence[Turn], work: float) -> dict[str, Any]:
    """A peer's row: rate (work / median turn), slowest and fastest turn, cores used (CPU
    seconds / wall seconds over its turns), the median turn's index and the turns."""
    seconds = [turn.seconds for turn in turns]
    middle = median_index(seconds)
    return {
        "rate": work / seconds[middle],
        "slowest": work / max(seconds),
        "fastest": work / min(seconds),
        "cores_used": sum(t.cpu_seconds for t in turns) / sum(seconds),
        "median_turn": middle,
        "turns": [{key: value for key, value in turn._asdict().items() if value is not None}
                  for turn in turns],
    }


def per_round_ratio(
    numerator: Sequence[Turn], denominator: Sequence[Turn], work: tuple[float, float] = (1, 1)
) -> dict[str, float]:
    """The median, min and max over rounds of rate(numerator) / rate(denominator) in a round,
    the rates being ``work[i]`` over a turn's seconds."""
    ratios = [(work[0] / a.seconds) / (work[1] / b.seconds)
              for a, b in zip(numerator, denominator, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def round_robin(
    peers: Mapping[str, Peer], steps: int, rounds: int, log: Callable[[str], None] = print
) -> dict[str, list[Turn]]:
    """``rounds`` rounds, every peer one turn of ``steps`` steps per round, every other round in
    reverse order."""
    turns: dict[str, list[Turn]] = {name: [] for name in peers}
    for index in range(rounds):
        order = list(peers) if index % 2 == 0 else list(reversed(peers))
        for name in order:
            turns[name].append(timed_turn(peers[name].run, steps))
        log(f"round {index + 1}/{rounds} (load {os.getloadavg()[0]:.2f}): " + ", ".join(
            f"{name} {peers[name].work(steps) / turns[name][-1].seconds:.4g} {peers[name].unit}"
            for name in peers))
    return turns


def measure(
    peers: Mapping[str, Peer | Callable[[], Peer]],
    steps: int,
    rounds: int,
    *,
    ratios: Sequence[tuple[str, str]] = (),
    warm_up_steps: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Builds every peer (a :class:`Peer` or a function that makes one), warms each up with a
    turn of ``warm_up_steps`` (default ``steps``; 0: none), takes ``rounds`` rounds of turns
    and summarizes them.

    Returns:
      ``{"steps", "rounds", "rows": {name: row}, "ratios": {"a/b": ratio}}``: a row is
      :func:`summarize`'s with the peer's ``label``, ``unit``, ``build_s``, ``warm_up_s`` and
      ``info``; a ratio (for each pair of ``ratios`` whose peers both ran) is
      :func:`per_round_ratio`'s with ``of_medians``, the ratio of the two rates.
    """
    built: dict[str, Peer] = {}
    build_seconds: dict[str, float] = {}
    for name, peer in peers.items():
        start = time.perf_counter()
        built[name] = peer if isinstance(peer, Peer) else peer()
        build_seconds[name] = time.perf_counter() - start
    warm_up = steps if warm_up_steps is None else warm_up_steps
    warm_up_seconds: dict[str, float] = {}
    for name, peer in built.items():
        if warm_up:
            warm_up_seconds[name] = timed_turn(peer.run, warm_up).seconds
            log(f"warm-up {name}: {warm_up_seconds[name]:.1f} s")
    turns = round_robin(built, steps, rounds, log)
    rows = {}
    for name, peer in built.items():
        rows[name] = {"label": peer.label, "unit": peer.unit, "build_s": build_seconds[name],
                      "warm_up_s": warm_up_seconds.get(name), **summarize(turns[name],
                                                                        peer.work(steps)),
                      "info": dict(peer.info)}
    found = {}
    for numerator, denominator in ratios:
        if numerator in built and denominator in built:
            work = (built[numerator].work(steps), built[denominator].work(steps))
            found[f"{numerator}/{denominator}"] = {
                "of_medians": rows[numerator]["rate"] / rows[denominator]["rate"],
                **per_round_ratio(turns[numerator], turns[denominator], work),
            }
    return {"steps": steps, "rounds": rounds, "rows": rows, "ratios": found}


def engine_peer(
    config: Any,
    *,
    data: Any = None,
    chunk: int,
    devices: Sequence[Any] | None = None,
    label: str = "",
) -> Peer:
    """The members of ``config`` (``bnreg.engine.build(config, devices, data=data)``) trained by
    ``Engine.train`` in calls of ``chunk`` steps, the state and data order carried from call to
    call as ``train_and_evaluate`` does (no evaluations); its rate is member-steps/s and its
    ``info`` the last step's mean training loss."""
    from bnreg import engine

    built = engine.build(config, devices, data=data)
    holder = [built.init(), built.empty_order()]
    info = {"last_loss": float("nan")}

    def run(num_steps: int) -> None:
        if num_steps % chunk:
            raise ValueError(f"{num_steps} steps are not a multiple of the chunk ({chunk}).")
        for _ in range(num_steps // chunk):
            holder[0], holder[1], losses = built.train(holder[0], holder[1], chunk)
        info["last_loss"] = float(losses[-1].mean())  # blocks until the last call is done

    unit = "steps/s" if len(built.members) == 1 else "member-steps/s"
    return Peer(run, label, work_per_step=len(built.members), unit=unit, info=info,
                engine=built)


def peak_peer(size: int = 2048, per_turn: int = 8, label: str = "") -> Peer:
    """``per_turn`` jitted ``size × size`` float32 matmuls per turn (the steps are ignored):
    the fp32 peak, in GFLOP/s, measured in the same rounds as the training rows."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)

    def run(num_steps: int) -> None:
        del num_steps
        for _ in range(per_turn):
            out = matmul(a, b)
        out.block_until_ready()

    label = label or f"peak: {size}² float32 jnp.matmul"
    return Peer(run, label, work_per_turn=per_turn * 2 * size**3 / 1e9, unit="GFLOP/s")
