"""A run's checks that need more than its config alone (:func:`bnreg.config.validate_config`):
values its members take that the model cannot, evaluators the net cannot have, probes of layers
or units the model does not have. :func:`bnreg.engine.check` makes them before anything
compiles."""

from __future__ import annotations

import ml_collections

from bnreg.engine.members import Members


def check_structure(config: ml_collections.ConfigDict, members: Members) -> None:
    """Checks that need the members: values the model cannot take, evaluators it cannot have."""
    evaluation, has_bn = config.evaluation, config.model.norm == "batch"
    requested = (*evaluation.during, *evaluation.final)
    if members.uses("dropconnect") and (config.model.name not in ("mlp", "convnet")
                                        or not config.model.hidden_sizes):
        raise ValueError("dropconnect masks the dense hidden layers of the mlp or the convnet "
                         f"(config.model.name is {config.model.name!r}, model.hidden_sizes "
                         f"{tuple(config.model.hidden_sizes)}).")
    if "gaussian" in requested and (not members.uses("dropconnect") or has_bn):
        raise ValueError("The gaussian evaluator (DropConnect's moment matching) needs a net "
                         "with DropConnect (dropconnect > 0) and without BN (model.norm None).")
    if "bn_momentum" in members.swept and not has_bn:
        raise ValueError("config.sweep.bn_momentum sweeps BN's EMA momentum, but the net has no "
                         "BN (model.norm None): every member would be the same.")
    if has_bn and "settled_ema" in requested and members.values["bn_momentum"].max() >= 1.0:
        raise ValueError("The settled_ema evaluator needs a BN momentum below 1 for every "
                         "member (an EMA of momentum 1 never moves): remove it from "
                         "config.evaluation or lower model.bn_momentum.")


def check_probes(config: ml_collections.ConfigDict) -> None:
    """The probed layers and units exist in the model (its hidden layers' widths)."""
    model, probe = config.model, config.probe
    widths = [*(model.conv_features if model.name == "convnet" else ()), *model.hidden_sizes]
    layers = list(probe.layers)
    if not layers:
        return
    if model.name == "inception":
        raise ValueError("The inception net records no probes (its layers are modules of "
                         "branches): set config.probe.layers = ().")
    if not all(-len(widths) <= layer < len(widths) for layer in layers):
        raise ValueError(
            f"config.probe.layers {layers} must index the model's {len(widths)} hidden layers "
            "(negative indices count from the last; () records no probes)."
        )
    if len({layer % len(widths) for layer in layers}) < len(layers):
        raise ValueError(f"config.probe.layers {layers} names a hidden layer twice (of "
                         f"{len(widths)}; negative indices count from the last).")
    narrowest = min(widths[layer] for layer in layers)
    if not all(0 <= unit < narrowest for unit in probe.units):
        raise ValueError(f"config.probe.units {list(probe.units)} must be units of every probed "
                         f"layer (the narrowest has {narrowest}).")
