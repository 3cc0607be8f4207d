"""Network registry: every architecture is built the same way.

    model = build_model("essnet_d", num_classes=11)

A constructor registers itself with ``@register_model("name")`` and must accept
``num_classes`` plus optional keyword arguments; it returns a plain ``nn.Module``
that maps a float NCHW batch to NCHW logits at the input resolution.
"""
from __future__ import annotations

from typing import Callable, Dict, List

_REGISTRY: Dict[str, Callable] = {}


def register_model(name: str) -> Callable[[Callable], Callable]:
    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"network '{name}' is registered twice")
        _REGISTRY[name] = fn
        return fn
    return wrap


def list_models() -> List[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, **kwargs):
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; valid choices: {', '.join(sorted(_REGISTRY))}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return _REGISTRY[name](num_classes=int(num_classes), **kwargs)


def _load_all() -> None:
    # Importing the package registers every network module (see nets/__init__.py).
    from seg_perception import nets  # noqa: F401
