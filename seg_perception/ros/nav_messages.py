"""Navigation messages from numpy: OccupancyGrid, organized PointCloud2, LabelInfo.

vision_msgs has no PyPI wheel: `label_info_type()` returns None when it is not importable
(scripts/build_interfaces.sh builds a field-compatible one into a venv).
"""
from __future__ import annotations

import array

import numpy as np
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2, PointField

from ..runtime.ground import GridSpec

XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate("xyz")]


def occupancy_grid(header, spec: GridSpec, cells: np.ndarray) -> OccupancyGrid:
    """int8 (rows = y, cols = x) grid in header.frame_id; cell (0, 0) at (x_range[0], y_range[0])."""
    msg = OccupancyGrid()
    msg.header = header
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(spec.resolution)
    msg.info.width, msg.info.height = int(cells.shape[1]), int(cells.shape[0])
    msg.info.origin.position.x = float(spec.x_range[0])
    msg.info.origin.position.y = float(spec.y_range[0])
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(cells, np.int8).tobytes())
    return msg


def cloud_template(points: np.ndarray) -> PointCloud2:
    """An organized x, y, z float32 cloud from (rows, cols, 3) points; NaN marks no point.
    Built once per calibration: per frame only the header changes."""
    pts = np.ascontiguousarray(points, np.float32)
    msg = PointCloud2()
    msg.height, msg.width = int(pts.shape[0]), int(pts.shape[1])
    msg.fields = XYZ_FIELDS
    msg.is_bigendian = False
    msg.point_step = 12
    msg.row_step = 12 * msg.width
    msg.is_dense = bool(np.isfinite(pts).all())
    msg.data = array.array("B", pts.tobytes())
    return msg


def label_info_type():
    """(LabelInfo, VisionClass) message classes, or None without vision_msgs."""
    try:
        from vision_msgs.msg import LabelInfo, VisionClass
    except ImportError:
        return None
    return LabelInfo, VisionClass


def label_info(types, header, class_names, threshold: float = 0.0):
    LabelInfo, VisionClass = types
    msg = LabelInfo()
    msg.header = header
    msg.class_map = [VisionClass(class_id=i, class_name=str(n)) for i, n in enumerate(class_names)]
    msg.threshold = float(threshold)
    return msg
