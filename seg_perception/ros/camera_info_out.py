"""segmentation/camera_info: the camera's calibration for the images the node publishes.

image_transport pairs an image topic with the camera_info beside it, and what fuses the labels
with depth, or draws them in RViz's Camera display, reads it there. The node's images have the
camera frame's size (output_size camera) or the network's (output_size network), so the camera's
CameraInfo goes out again with each frame's header, scaled to the images' size, with the region of
interest and binning folded into K and P (image_map): it describes the published image alone.
"""
from __future__ import annotations

import time
from typing import Optional, Tuple

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo

from ..runtime.ground import image_map
from .ground_outputs import sensor_window


def outputs_camera_info(info: CameraInfo, header, frame_size: Tuple[int, int],
                        out_size: Tuple[int, int]) -> CameraInfo:
    """The CameraInfo of an output image of ``out_size`` (width, height) made from a frame of
    ``frame_size`` that ``info`` describes; stamped with ``header``. ValueError when ``info``
    is of another frame size (another resolution's calibration) or its ROI does not fit."""
    x0, y0, w, h, bx, by = sensor_window(info, rectified=False)
    fw, fh = frame_size
    if (fw, fh) != (w // bx, h // by):
        window = "" if (w, h, bx, by) == (info.width, info.height, 1, 1) else \
            f" (its region of interest and binning make {w // bx}x{h // by})"
        raise ValueError(f"frame is {fw}x{fh} but CameraInfo is {info.width}x{info.height}{window}: publish the "
                         "calibration of the frames' resolution")
    ow, oh = out_size
    A = image_map(x0, y0, bx, by, ow / fw, oh / fh)
    K = np.asarray(info.k, np.float64).reshape(3, 3)
    P = np.asarray(info.p, np.float64).reshape(3, 4)
    out = CameraInfo(width=int(ow), height=int(oh), distortion_model=info.distortion_model, d=list(info.d),
                     k=(A @ K).ravel().tolist(), r=list(info.r), p=(A @ P).ravel().tolist())
    out.header.stamp, out.header.frame_id = header.stamp, header.frame_id
    return out  # binning 0 and an all-zero ROI: the whole (output) image


class CameraInfoFeed:
    """One camera's CameraInfo: subscribed while the node is active (start/stop), its newest
    message kept for the ground projection and for segmentation/camera_info (``message``)."""

    def __init__(self, node, topic: str):
        self.node, self.topic = node, topic
        self.sub = None
        self.latest: Optional[CameraInfo] = None
        self.status = "inactive"  # the latest frame's segmentation/camera_info (diagnostics)
        self._warned_at = -1e9  # monotonic time of this camera's latest warning

    def start(self) -> None:
        if self.sub is None:
            # best effort takes CameraInfo from reliable and best-effort drivers alike
            self.sub = self.node.create_subscription(CameraInfo, self.topic, self._take, qos_profile_sensor_data)
        self.status = "no frame yet"

    def stop(self) -> None:
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub = None
        self.status = "inactive"

    def _take(self, msg: CameraInfo) -> None:
        self.latest = msg  # one reference swap: the workers read whichever is newest

    def message(self, header, res, info: Optional[CameraInfo]) -> Optional[CameraInfo]:
        """segmentation/camera_info for one frame's outputs from ``info`` (``latest``, read once by
        the caller for all of the frame's outputs), or None: the reason in ``status``, and a warning
        at most every 30 s for this camera. Never raises: the frame's images go out regardless."""
        out_size = res.labels.shape[::-1]
        if info is None:
            self.status = "not published: no CameraInfo received yet"
            return None
        try:
            msg = outputs_camera_info(info, header, res.frame_size if res.frame_size[0] else out_size, out_size)
        except Exception as e:  # a CameraInfo the node cannot use costs this output only
            self.status = f"not published: {e}" if isinstance(e, ValueError) else \
                f"not published: {type(e).__name__}: {e}"
            now = time.monotonic()
            if now - self._warned_at >= 30.0:
                self._warned_at = now
                self.node.get_logger().warning(f"segmentation/camera_info (from {self.topic}) {self.status}")
            return None
        self.status = f"published at {out_size[0]}x{out_size[1]}"
        return msg
