"""Checks the launch files run on their arguments (pure functions: launch itself has no wheels
here, so these are what the tests can run).

`ros2 launch` accepts any NAME:=VALUE and a Node's parameter file that does not exist is only
warned about, so a typo would start the node on its defaults without a word."""
from __future__ import annotations

import difflib
import os
import re
from typing import Iterable, List, Mapping


def check_params_file(path: str) -> str:
    """The parameter file a user named must exist: a RuntimeError (launch prints its one line)."""
    if not os.path.isfile(os.path.expanduser(path)):
        raise RuntimeError(f"params_file {path} not found: pass an existing YAML parameter file "
                           "(config/jetson.yaml in the package's share folder is the template)")
    return os.path.expanduser(path)


def require_package(name: str, why: str, instead: str) -> None:
    """A ROS package a launch file starts a node of must be installed: else one line, before any
    node starts (launch would fail on it after starting the others, and leave them running)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    try:
        get_package_share_directory(name)
    except (PackageNotFoundError, OSError):  # OSError: no ROS environment sourced at all
        apt = "ros-${ROS_DISTRO}-" + name.replace("_", "-")
        raise RuntimeError(f"{why} needs the ROS package {name}, which is not installed (sudo apt install "
                           f"{apt}); or {instead}") from None


def misspelt_arguments(configurations: Mapping[str, str], known: Iterable[str], launch_file: str,
                       node_parameters: Iterable[str] = ()) -> List[str]:
    """One warning per launch configuration that looks like a misspelt argument of ``launch_file``,
    or that is one of the node's parameters (``node_parameters``) but no argument of the launch file
    (`backend:=onnxruntime` set nothing). Warnings, not errors: a launch file that includes this one
    shares its own arguments with it (a bringup's `model:=` or `namespace:=` reach this file's
    configurations too), so the wording holds for both."""
    known = list(known)
    node_parameters = set(node_parameters)
    out = []
    for name in sorted(configurations):
        if name not in known and name in node_parameters:
            out.append(f"launch configuration '{name}' (given on the command line or by an including launch file) "
                       f"is a node parameter's name, not an argument of {launch_file}: node parameters are set in "
                       f"params_file (a copy of the shipped YAML), or run the node with `--ros-args -p {name}:=...`; "
                       f"this launch file passes it to no node")
            continue
        if name == "namespace" and "node_namespace" in known:
            # an including file's own (Nav2 bringup's): it applies through that file's PushROSNamespace
            out.append(f"launch configuration 'namespace' (given on the command line or by an including launch "
                       f"file) is not an argument of {launch_file}: it sets the node's namespace only through an "
                       f"including file's PushROSNamespace; node_namespace:=... gives the node one of its own")
            continue
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if name not in known and near:
            out.append(f"launch argument '{name}' is not one of {launch_file}'s: did you mean '{near[0]}'? "
                       "(it is ignored)")
    return out


def namespace(value: str, argument: str = "node_namespace"):
    """A namespace launch argument (``argument``): None when empty; relative (under an including file's
    PushROSNamespace) or absolute; a name ROS refuses is a RuntimeError naming the argument."""
    v = value.strip().rstrip("/") if value.strip() != "/" else ""
    if not v:
        return None
    if not re.fullmatch(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", v):
        raise RuntimeError(f"launch argument {argument}:={value} is not a ROS namespace (letters, digits and _ "
                           f"between slashes, no token starting with a digit), e.g. {argument}:=front")
    return v


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def flag(name: str, value: str) -> bool:
    """A true/false launch argument: anything else (managed:=flase) is a RuntimeError naming it,
    not a silent false."""
    v = value.strip().lower()
    if v not in TRUE + FALSE:
        raise RuntimeError(f"launch argument {name}:={value} must be true or false")
    return v in TRUE


def whole_number(name: str, value: str) -> int:
    """An integer launch argument (input_width:=640.0 is refused with its name, not int()'s message)."""
    try:
        return int(value.strip())
    except ValueError:
        raise RuntimeError(f"launch argument {name}:={value} must be a whole number") from None


def number(name: str, value: str) -> float:
    """A number launch argument (max_rate:=10 or 7.5); the node checks its range and names it."""
    try:
        return float(value.strip())
    except ValueError:
        raise RuntimeError(f"launch argument {name}:={value} must be a number") from None


def manager_bond_timeout(params_file: str, bond_messages: bool) -> tuple:
    """(bond_timeout for the node's nav2_lifecycle_manager, a note or ""). Nav2's 4 s where the node
    keeps a bond; 0 (no bond expected) where it cannot (no bond messages) or is told not to
    (bond_heartbeat_period 0 in the params file, in any node's section): a manager waiting for a
    heartbeat that never comes aborts the bringup."""
    import yaml
    with open(os.path.expanduser(params_file)) as f:
        doc = yaml.safe_load(f) or {}

    def periods(node):
        if isinstance(node, dict):
            params = node.get("ros__parameters")
            if isinstance(params, dict) and "bond_heartbeat_period" in params:
                yield params["bond_heartbeat_period"]
            for value in node.values():
                yield from periods(value)
    if not bond_messages:
        return 0.0, ("the ROS bond messages are not installed (ros-<distro>-bond, which Nav2 brings): the node "
                     "keeps no bond, so its manager runs with bond_timeout 0 and does not notice it dying")
    if any(p == 0 for p in periods(doc)):
        return 0.0, ""  # asked for: no note
    return 4.0, ""
