"""The engine of one run: its members, data, network and compiled programs, as one object.

``engine = build(config)`` loads and checks everything a run needs before anything compiles;
then ``state = engine.init()``, ``state, order, losses = engine.train(state, order, k)`` and
``engine.evaluate(state, names)`` are the whole training loop's parts, public for studies that
need more than :func:`bnreg.engine.train_and_evaluate` (e.g. training on from a final state).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bnreg import data as data_lib
from bnreg.config import AXES, validate_config
from bnreg.engine import bn_statistics, evaluators
from bnreg.engine.checks import check_probes, check_structure
from bnreg.engine.devices import (
    Layout,
    check_mesh,
    initialize_processes,
    layout,
    replicate,
    shard_members,
    splits_members_correctly,
    to_host,
)
from bnreg.engine.members import Members, members_from_config
from bnreg.engine.memory import check_memory
from bnreg.engine.optimizer import build_optimizer
from bnreg.engine.run_data import RunData, load_run_data, member_subsets
from bnreg.engine.step import (
    MEMBER_AXES,
    MODEL_AXES,
    DataOrder,
    Network,
    Sampler,
    TrainState,
    init_members,
    make_train_chunk,
)
from bnreg.engine.tasks import build_task
from bnreg.models import build_model

Results = dict[str, dict[str, np.ndarray]]  # column suffix -> metric -> (members, ...)


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
    """A run's members, data and compiled programs (made by :func:`build`).

    Attributes:
      config: the validated config.
      members: the members, in the order of the member axis.
      data: the run's data (host arrays).
      network: model, task and optimizer factory.
      sampler: how the members draw their batches.
      layout: the mesh the members and their batches live on
        (:func:`bnreg.engine.devices.layout`).
      during: the evaluators of every evaluation; the first is the primary.
      final: the evaluators of the end (``during``'s, then ``config.evaluation.final``'s).
      full: the primary on the whole evaluation split, at ``config.evaluation.full_steps`` of a
        run whose evaluations during training score a subset (``config.evaluation.subset``);
        ``()`` otherwise.
      has_bn: whether the network has BN layers.
    """

    config: ml_collections.ConfigDict
    members: Members
    data: RunData
    network: Network
    sampler: Sampler
    layout: Layout
    during: tuple[evaluators.Evaluator, ...]
    final: tuple[evaluators.Evaluator, ...]
    full: tuple[evaluators.Evaluator, ...]
    has_bn: bool
    _arrays: Mapping[str, Any]
    _chunk: Callable[..., Any]
    _evaluate: Mapping[str, Callable[..., Any]]
    _statistics: bn_statistics.StatisticsFn
    # hidden_values' compiled functions by (layer, kind), made on first use.
    _hidden_values: dict = dataclasses.field(default_factory=dict)

    @property
    def settled_ema_batches(self) -> int | None:
        """The EMA updates of the settled-EMA statistics (``None`` without BN, or for a
        momentum of 1, which never settles)."""
        momentum = float(self.members.values["bn_momentum"].max())
        return bn_statistics.ema_settling_batches(momentum) if self.has_bn and momentum < 1 \
            else None

    @property
    def devices(self) -> tuple[jax.Device, ...]:
        """The devices of the run's mesh."""
        return self.layout.devices

    @property
    def primary(self) -> evaluators.Evaluator:
        return self.during[0]

    @property
    def split(self) -> str:
        """The split every evaluation scores: ``"test"`` or ``"validation"``."""
        return self.data.evaluation_split

    def init(self) -> TrainState:
        """The members' initial states, on the run's devices."""
        state = init_members(self.network, self.members, self.data.train.images[:1])
        return shard_members(state, self.layout)

    def adopt(self, state: TrainState) -> TrainState:
        """A copy of ``state`` (e.g. another run's final state of the same members) on this
        engine's devices; a copy, because :meth:`train` donates the state it is given."""
        return shard_members(jax.tree.map(jnp.copy, state), self.layout)

    def empty_order(self) -> DataOrder:
        """A data order that the first :meth:`train` call replaces."""
        return shard_members(self.sampler.empty_order(len(self.members)), self.layout)

    def train(
        self, state: TrainState, order: DataOrder, num_steps: int
    ) -> tuple[TrainState, DataOrder, jax.Array]:
        """``num_steps`` steps of every member in one compiled call; ``state`` and ``order`` are
        donated (do not use them again). Returns the new state and order and the training
        losses ``(num_steps, members)``."""
        arrays = self._arrays
        return self._chunk(
            state, order, arrays["train_images"], arrays["train_labels"], arrays["subsets"],
            num_steps,
        )

    @property
    def train_programs(self) -> int:
        """How many programs :meth:`train` has compiled so far (one per chunk length: a state
        it returned goes back in without another)."""
        return self._chunk._cache_size()

    def lower_train(
        self, state: TrainState, order: DataOrder, num_steps: int
    ) -> jax.stages.Lowered:
        """The program of :meth:`train` for ``num_steps`` steps, lowered for ``state`` and
        ``order`` without running it (neither is donated): its ``.compile()`` has XLA's
        ``memory_analysis()`` and ``cost_analysis()`` of a chunk.

        Args:
          state: the members' state, as :meth:`init` returns it.
          order: a data order, as :meth:`empty_order` returns it.
          num_steps: the chunk's steps.

        Returns:
          The chunk's ``jax.stages.Lowered``.
        """
        arrays = self._arrays
        return self._chunk.lower(
            state, order, arrays["train_images"], arrays["train_labels"], arrays["subsets"],
            num_steps,
        )

    def statistics(self, state: TrainState, kind: str) -> Any:
        """The BN statistics of every member of ``state``: ``"ema"`` (its own),
        ``"population"`` (Alg. 2) or ``"settled_ema"`` (:mod:`bnreg.engine.bn_statistics`)."""
        return self._statistics(state, kind)

    def evaluate(
        self,
        state: TrainState,
        selected: Sequence[evaluators.Evaluator],
        *,
        batch_stats: Any = None,
    ) -> Results:
        """Every evaluator of ``selected`` on its split (the run's evaluation split, or the
        training examples of ``on_train``), per member.

        BN uses each evaluator's statistics of ``state``, or ``batch_stats`` when given (e.g.
        statistics of other weights). Returns ``{column suffix: {metric: (members, ...)}}``
        (host arrays); the statistics each kind needs are computed once.
        """
        cache: dict[str | None, Any] = {}
        results: Results = {}
        for evaluator in selected:
            images, labels = self._arrays["scored"][evaluator.split]
            kind = evaluator.bn_statistics
            if batch_stats is not None:
                cache[kind] = batch_stats
            elif kind not in cache:
                cache[kind] = self._statistics(state, kind) if kind else state.batch_stats
            found = self._evaluate[evaluator.name](state, cache[kind], images, labels)
            results.update(to_host(found))
        return results

    def hidden_values(
        self, state: TrainState, *, layer: int = 0, kind: str = "activation",
        split: str = "evaluation", batch_stats: Any = None,
    ) -> np.ndarray:
        """Hidden layer ``layer``'s ``kind`` values (``"activation"``: the nonlinearity's output,
        the dropout paper's Fig. 8; ``"preactivation"``: its input) of every member on every
        example of ``split`` (``"evaluation"``: the run's validation or test split;
        ``"train"``: the ``on_train`` examples), from the deterministic network — noise off,
        BN with ``config.evaluation.bn_statistics``' statistics or ``batch_stats``. Returns a
        host array ``(members, examples, units)`` (a conv layer's ``(members, examples, h, w,
        features)``).

        Raises:
          ValueError: an unknown kind or split, or a layer the model does not have.
        """
        scored = self._arrays["scored"]
        if kind not in ("activation", "preactivation") or not len(scored.get(split, ((), ()))[1]):
            raise ValueError(f"kind must be 'activation' or 'preactivation' and split one of "
                             f"{sorted(s for s in scored if len(scored[s][1]))} (a split with "
                             f"examples), got {kind!r} and {split!r}.")
        model = self.config.model
        hidden = 0 if model.name == "inception" else len(model.hidden_sizes) + (
            len(model.conv_features) if model.name == "convnet" else 0)
        if not -hidden <= layer < hidden:
            raise ValueError(f"layer {layer} is not one of the model's {hidden} hidden layers "
                             "(negative indices count from the last).")
        if batch_stats is None:
            kind_of_statistics = self.config.evaluation.bn_statistics if self.has_bn else None
            batch_stats = (self._statistics(state, kind_of_statistics) if kind_of_statistics
                           else state.batch_stats)
        images, _ = self._arrays["scored"][split]
        function = self._hidden_values.get((layer, kind))
        if function is None:
            function = jax.jit(jax.vmap(functools.partial(
                evaluators.hidden_values, self.network, layer=layer, kind=kind,
                batch_size=self.config.eval_batch_size,
            ), in_axes=(MEMBER_AXES, 0, None)))
            self._hidden_values[(layer, kind)] = function
        return np.asarray(to_host(function(state, batch_stats, images)))

    def evaluator(self, name: str) -> evaluators.Evaluator:
        """The run's evaluator of that name (its column suffix, e.g. ``"population"``, or its
        config name, e.g. ``"deterministic"``), whether it runs during training or at the end
        only."""
        for evaluator in self.final:
            if name in (evaluator.name, evaluator.source):
                return evaluator
        raise ValueError(f"This run has no evaluator {name!r}; it has "
                         f"{[e.name for e in self.final]}.")


def _on_members(draw: Callable[[int], jax.Array],
                run_layout: Layout) -> Callable[[int], jax.Array]:
    """``draw``, its ``(members, ...)`` result placed as the members' state is."""
    if len(run_layout.devices) == 1:
        return draw
    return lambda num_batches: jax.device_put(jax.device_get(draw(num_batches)),
                                              run_layout.sharding("members"))


def _vmapped(function: Callable[..., Any]) -> Callable[..., Any]:
    """A one-member ``function(state, images, batch_indices)`` over all members, jitted."""
    return jax.jit(jax.vmap(function, in_axes=(MEMBER_AXES, None, 0)))


class _Plan(NamedTuple):
    """What a run needs before any device work: checked config, members, data, network."""

    members: Members
    data: RunData
    subsets: tuple[np.ndarray, ...] | None
    network: Network
    during: tuple[evaluators.Evaluator, ...]
    final: tuple[evaluators.Evaluator, ...]
    full: tuple[evaluators.Evaluator, ...]
    functions: dict[str, evaluators.EvaluateFn]


def _plan(config: ml_collections.ConfigDict, data: RunData | None = None) -> _Plan:
    validate_config(config)
    initialize_processes(config.distributed)  # before anything asks for a device
    members = members_from_config(config)
    check_structure(config, members)
    check_mesh(config, len(members))
    check_probes(config)
    data = load_run_data(config) if data is None else data
    num_train = len(data.train.labels)
    if config.evaluation.train_examples > num_train:
        raise ValueError(f"config.evaluation.train_examples ({config.evaluation.train_examples}) "
                         f"exceeds the {num_train} examples of the training split.")
    if config.batch_size > num_train:
        raise ValueError(
            f"config.batch_size ({config.batch_size}) exceeds the {num_train} training examples."
        )
    subsets = member_subsets(members, data.train.labels, config.batch_size)
    smallest = min(map(len, subsets)) if subsets else num_train
    if config.evaluation.train_examples > smallest:
        raise ValueError(f"config.evaluation.train_examples ({config.evaluation.train_examples}) "
                         f"exceeds the smallest member's training subset ({smallest}).")
    if config.evaluation.subset >= len(data.evaluation.labels):
        raise ValueError(f"config.evaluation.subset ({config.evaluation.subset}) must be smaller "
                         f"than the {len(data.evaluation.labels)} examples of the evaluation "
                         "split (0: all of them).")
    # A model axis that is not traced (every member alike, e.g. a zipped axis that repeats its
    # value) is the model's field: the members' value, which need not be config.model's.
    model_config = config.model.copy_and_resolve_references()
    for axis in MODEL_AXES:
        if axis not in members.traced_axes:
            model_config[AXES[axis].split(".", 1)[1]] = float(members.constant(axis))
    model = build_model(model_config, data.image_shape, data.num_classes)
    network = Network(model, build_task(config.task), build_optimizer(config.optimizer, members))
    expand = functools.partial(
        evaluators.expand,
        has_bn=config.model.norm == "batch",
        bn_statistics=config.evaluation.bn_statistics,
        monte_carlo_samples=tuple(config.evaluation.monte_carlo_samples),
        gaussian_samples=tuple(config.evaluation.gaussian_samples),
        train_examples=config.evaluation.train_examples,
        test_too=config.evaluation.test_too,
    )
    # With a subset, the evaluations during training score it; the final one the whole split.
    during = tuple(e._replace(split="subset") if config.evaluation.subset and
                   e.split == "evaluation" else e for e in expand(config.evaluation.during))
    final = tuple(expand([*config.evaluation.during, *config.evaluation.final]))
    # The primary on the whole split at full_steps, recorded as `<metric>_full`.
    full = ((final[0]._replace(name="full", source="full", split="evaluation"),)
            if config.evaluation.full_steps else ())
    probe = evaluators.ProbeSpec.from_config(config.probe) if config.probe.layers else None
    functions = {
        evaluator.name: evaluators.member_function(
            network, evaluator, batch_size=config.eval_batch_size,
            probe=probe if evaluator == during[0] and evaluator.kind == "deterministic" else None,
        )
        for evaluator in (*final, *full)
    }
    # Last: it traces the model's init (from shapes), after every check on the config itself.
    check_memory(network, members, data.image_shape, jax.devices())
    return _Plan(members, data, subsets, network, during, final, full, functions)


def _scored_training_examples(data: RunData, subsets: tuple[np.ndarray, ...] | None,
                              count: int) -> tuple[np.ndarray, np.ndarray]:
    """The training examples the ``on_train`` evaluator scores: the first ``count`` of the
    training split, or ``(members, count, ...)`` — the first ``count`` of each member's subset."""
    if subsets is None:
        return data.train.images[:count], data.train.labels[:count]
    indices = np.stack([subset[:count] for subset in subsets])
    return data.train.images[indices], data.train.labels[indices]


def check(config: ml_collections.ConfigDict) -> None:
    """Every check :func:`build` makes on bad input (the config, the members, the data, the
    evaluators), without touching a device: a group checks all its runs before any trains.

    Raises:
      ValueError: as :func:`build`.
    """
    _plan(config)


def build(
    config: ml_collections.ConfigDict,
    devices: Sequence[jax.Device] | None = None,
    *,
    data: RunData | None = None,
) -> Engine:
    """The engine of the run ``config`` describes, on a mesh (``config.mesh``) of ``devices``
    (default: every device of every process).

    Every check on bad input (:func:`check`) comes first, before anything is compiled.

    Args:
      config: the run's config.
      devices: the mesh's devices (``None``: all).
      data: the run's data, already loaded (e.g. synthetic arrays), instead of
        :func:`load_run_data`'s of ``config.dataset``; checked as loaded data is.

    Raises:
      ValueError: an invalid config (:func:`bnreg.config.validate_config`), a mesh the devices,
        members or batch cannot fill (:func:`bnreg.engine.devices.layout`), a batch larger than
        the training split, a subset larger than the split or smaller than a batch, a sweep the
        model cannot take (DropConnect outside the MLP, a BN momentum without BN), an
        evaluator the net cannot have, probes of layers or units the model does not have.
    """
    plan = _plan(config, data)
    members, data, subsets, network = plan.members, plan.data, plan.subsets, plan.network
    num_train = len(data.train.labels)
    run_layout = layout(len(members), config.batch_size, config.mesh, devices,
                        split_members=splits_members_correctly(config.model.name))
    sampler = Sampler(num_train, config.batch_size,
                      None if subsets is None else tuple(len(s) for s in subsets))
    # Each member scores its own training subset's examples; every other split is shared.
    per_member = {e.name for e in plan.final if e.split == "train" and subsets is not None}
    evaluate = {
        name: jax.jit(jax.vmap(function, in_axes=(MEMBER_AXES, 0, *(
            (0, 0) if name in per_member else (None, None)))))
        for name, function in plan.functions.items()
    }
    subset_indices = (data_lib.stratified_indices(data.evaluation.labels,
                                                  config.evaluation.subset, 0)
                      if config.evaluation.subset else slice(0))
    arrays = replicate({
        "train_images": data.train.images,
        "train_labels": data.train.labels,
        # The examples each evaluator's split scores (Evaluator.split).
        "scored": {
            "evaluation": (data.evaluation.images, data.evaluation.labels),
            "train": _scored_training_examples(data, subsets, config.evaluation.train_examples),
            "subset": (data.evaluation.images[subset_indices],
                       data.evaluation.labels[subset_indices]),
            **({"test": (data.test.images, data.test.labels)} if data.test else {}),
        },
        "subsets": None if subsets is None else tuple(subsets),
    }, run_layout)
    statistics = bn_statistics.make_inference_statistics(
        network,
        arrays["train_images"],
        _on_members(bn_statistics.member_batch_indices(members.keys(), num_train,
                                                       config.batch_size, subsets), run_layout),
        population_batches=config.evaluation.population_batches,
        settling_momentum=float(members.values["bn_momentum"].max()),
        vmapped=_vmapped,
    )
    return Engine(
        config=config, members=members, data=data, network=network, sampler=sampler,
        layout=run_layout, during=plan.during, final=plan.final, full=plan.full,
        has_bn=config.model.norm == "batch", _arrays=arrays,
        _chunk=make_train_chunk(network, sampler,
                                run_layout.batch_sharding if run_layout.data_size > 1 else None,
                                unroll=config.unroll_steps),
        _evaluate=evaluate, _statistics=statistics,
    )
