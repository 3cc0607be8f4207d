"""Settings of one bag evaluation (offline or live), as `eval-bag` parses them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

# Exit codes of `eval-bag` and `demo` (docs/evaluation.md documents the same).
EXIT_OK = 0
EXIT_BAD_INPUT = 2      # usage, a missing/damaged bag, a topic the bag lacks, a bad model ...
EXIT_NO_MATCH = 3       # nothing to evaluate: no frame answered, no ground-truth stamp matched
EXIT_NODE = 4           # live: the node did not start, or no node answered on the topic
EXIT_PARTIAL = 5        # a damaged or cut-short bag: the report covers the frames before the damage


class EvalError(RuntimeError):
    """A one-line failure with the exit code the command returns."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


@dataclass
class EvalConfig:
    bag: Path
    model: str = ""                       # name or card path; "" = the default model
    backend: str = "onnxruntime"
    precision: str = "fp32"
    onnx: Optional[str] = None
    threads: int = 0
    image_topic: Optional[str] = None
    gt_topic: Optional[str] = None
    gt_dir: Optional[Path] = None
    no_gt: bool = False
    max_frames: int = 0
    samples: int = 4
    out_bag: Optional[Path] = None
    out_bag_format: str = "mcap"
    keep_labels: bool = False             # keep every predicted label map in the result (tests)
    progress: bool = True
    # live mode
    attach: bool = False
    rate: float = 0.0                     # > 0: publish at this many frames per second
    speed: float = 1.0                    # else: the recorded timing, sped up by this factor
    node_qos: str = "auto"                # auto | sensor_data | reliable (auto: reliable for raw frames)
    publish_topic: Optional[str] = None   # where to publish the frames (default: the bag's topic)
    startup_timeout: float = 90.0
    drain_timeout: float = 15.0
    node_log: Optional[Path] = None
    node_params: Dict[str, str] = field(default_factory=dict)
