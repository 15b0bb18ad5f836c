"""``--set model.*`` on a trained model: rebuilt with the overrides, or refused naming the key.

The evaluating commands (``eval``, ``loc-eval``, ``analyze``) build the model from the config
the checkpoint stores. An override of a ``model.*`` key is applied to that config *before*
the model is built (:func:`flrdf.engine.checkpoint.load_model`), and the checkpoint's weights
are then loaded with strict checks, decided per key:

- keys that only act in training or at construction (:data:`NO_EFFECT`) would change nothing
  on a trained model: refused with the reason;
- keys that drop a module (``suppression=none`` / ``fixed`` drops the learnable controller,
  ``loc_map=mean`` the DDT statistics, ``branches`` a head, ``suppress_layer3=false`` the
  layer3 gate): the checkpoint's weights of that module are left unused (:data:`DROPS`);
- anything else (tau, box refinement, loc_layer, layer4_stride, ...) rebuilds the model; a
  weight the new model needs but the checkpoint lacks, or one whose shape differs, is an error
  naming the overridden keys (e.g. ``loc_map=ddt`` on a model trained with the channel mean:
  there are no DDT statistics to load).
"""

from __future__ import annotations

from dataclasses import fields

from flrdf.config import ConfigError, ModelConfig

NO_EFFECT = {
    "pretrained": "the weights come from the checkpoint",
    "weights": "the weights come from the checkpoint",
    "gate_init": "it only sets the learnable gate's starting value in training",
    "ddt_momentum": "it only sets how training updates the DDT statistics",
    "frozen_stages": "it only keeps stages from training",
}

DROPS = {  # key -> state-dict prefixes whose weights an override of it may leave unused
    "suppression": ("suppression.", "suppression3."),
    "suppress_layer3": ("suppression3.",),
    "loc_map": ("ddt.",),
    "branches": ("heads.",),
}


def changed_keys(stored: ModelConfig, new: ModelConfig) -> list[str]:
    """The ``model.*`` keys whose value differs between the checkpoint's config and the overridden one."""
    return [f.name for f in fields(ModelConfig) if getattr(stored, f.name) != getattr(new, f.name)]


def check_changes(changed: list[str]) -> None:
    """Refuse overrides that would have no effect on a trained model (ConfigError naming the key)."""
    for key in changed:
        if key in NO_EFFECT:
            raise ConfigError(f"--set model.{key} cannot apply to a trained model: {NO_EFFECT[key]}")


def _names(changed: list[str]) -> str:
    return ", ".join(f"model.{k}" for k in changed)


def load_weights(model, state: dict, changed: list[str]) -> None:
    """Load ``state`` into ``model`` (built with the overridden config); strict except for the weights an
    override in ``changed`` drops (:data:`DROPS`). Raises ConfigError naming the overridden keys when the
    weights do not fit, RuntimeError (as ``load_state_dict``) when no override is involved."""
    if not changed:
        model.load_state_dict(state)
        return
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when not strict
        raise ConfigError(f"--set {_names(changed)}: the checkpoint's weights do not fit the model these "
                          f"overrides describe: {str(exc)[:400]}") from None
    if result.missing_keys:
        raise ConfigError(f"--set {_names(changed)}: the checkpoint has no weights for "
                          f"{', '.join(result.missing_keys[:4])}{' ...' if len(result.missing_keys) > 4 else ''} "
                          "(the model was not trained that way)")
    droppable = tuple(p for k in changed for p in DROPS.get(k, ()))
    extra = [k for k in result.unexpected_keys if not k.startswith(droppable)] if droppable else result.unexpected_keys
    if extra:
        raise ConfigError(f"--set {_names(changed)}: the checkpoint's weights {', '.join(extra[:4])} would be left "
                          "unused; these overrides do not describe the trained model")
