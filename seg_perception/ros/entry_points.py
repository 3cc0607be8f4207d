"""The nodes' console commands. The node modules import rclpy and the ROS message packages at
the top; a plain `pip install .` has none of them, and there the commands say so in one line
instead of ending in a traceback."""
from __future__ import annotations

import importlib
import importlib.util
import sys

# the modules of the `ros` extra (a ROS 2 install's on a ROS system); the CLI names the extra for them too
ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "builtin_interfaces",
               "nav_msgs", "geometry_msgs", "lifecycle_msgs")


def _run(module: str, program: str) -> int:
    try:
        node_module = importlib.import_module(module)
    except ImportError as e:  # a module missing, or a name missing from one (ModuleNotFoundError is one too)
        missing = (e.name or "").split(".")[0]
        if missing not in ROS_MODULES:
            raise
        # missing from an installed rclpy: a compiled module (rclpy._rclpy_pybind11) is a ROS 2 built for
        # another Python; anything else one older than Humble (Foxy's rclpy.exceptions lacks a name)
        name = e.name or ""
        found = "." in name and importlib.util.find_spec(missing) is not None
        compiled = "._" in name or "pybind" in name
        what = f"no module '{name}'" if isinstance(e, ModuleNotFoundError) else str(e).split(" (")[0]
        if not found and missing != "rclpy" and importlib.util.find_spec("rclpy") is not None:
            # a ROS 2 that is there but lacks one message package: not "ROS 2 is not available"
            print(f"{program}: the ROS package {missing} is not installed here (rclpy is): sudo apt install "
                  f"ros-$ROS_DISTRO-{missing.replace('_', '-')} (without a ROS install: pip install "
                  "'seg_perception[ros]')", file=sys.stderr)
            return 2
        print(f"{program}: " + (
            f"rclpy cannot load its compiled part (no module '{name}'): this Python ({sys.version.split()[0]}) is "
            "not the one that ROS 2 was built for" if found and compiled else
            f"this ROS 2 is too old ({what}): the node needs ROS 2 Humble or later" if found else
            f"ROS 2 is not available here (no module '{missing}')")
              + ": source ROS 2 (e.g. source /opt/ros/jazzy/setup.bash) or pip install 'seg_perception[ros]'",
              file=sys.stderr)
        return 2
    return node_module.main()


def segmentation_node() -> int:
    return _run("seg_perception.ros.node", "segmentation_node")


def segmentation_lifecycle_node() -> int:
    return _run("seg_perception.ros.lifecycle", "segmentation_lifecycle_node")
