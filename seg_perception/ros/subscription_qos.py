"""The camera subscription's QoS: sensor_data, reliable, or auto (what the camera's publishers offer).

Depth 1 and volatile either way: the node serves the newest frame, and a frame from before it
subscribed is not one to segment."""
from __future__ import annotations

from typing import Sequence

from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy


def subscription_qos(reliable: bool) -> QoSProfile:
    return QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST, durability=QoSDurabilityPolicy.VOLATILE,
                      reliability=QoSReliabilityPolicy.RELIABLE if reliable else QoSReliabilityPolicy.BEST_EFFORT)


def auto_reliable(publishers_reliable: Sequence[bool], reliable: bool) -> bool:
    """qos: auto's choice. Reliable while every publisher is: over Fast DDS a reliable camera's frames
    of 0.5 MB and more mostly fail to reach a best-effort subscriber (README, "DDS notes"). Best
    effort as soon as one publisher is best effort: a reliable subscription never matches it. With
    no publisher there is nothing to follow, and ``reliable`` (the subscription's now, reliable at
    activation) stays."""
    if not publishers_reliable:
        return reliable
    return all(publishers_reliable)
