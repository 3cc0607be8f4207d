"""Network registry: every architecture is built the same way.

    model = build_model("essnet_d", num_classes=11)

A constructor registers itself with ``@register_model("name")`` and must accept
``num_classes`` plus optional keyword arguments; it returns a plain ``nn.Module``
that maps a float NCHW batch to NCHW logits at the input resolution.

Importing this module always runs ``nets/__init__.py`` first (Python imports the
package before its modules), and that imports every network: the registry is full
before anyone can call it, without importing the package back from here.
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
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, **kwargs):
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; valid choices: {', '.join(sorted(_REGISTRY))}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return _REGISTRY[name](num_classes=int(num_classes), **kwargs)
