"""The model zoo. Importing this package registers every network."""
from .registry import build_model, list_models, register_model  # noqa: F401
from . import erfnet, essnet  # noqa: F401  (registration side effects)
from . import attendseg, cgnet, edanet, edgesegnet, essnet_variants, rdsnet, wspdnet  # noqa: F401
