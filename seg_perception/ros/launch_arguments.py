"""Checks the launch files run on their arguments (pure functions: launch itself has no wheels
here, so these are what the tests can run).

`ros2 launch` accepts any NAME:=VALUE and a Node's parameter file that does not exist is only
warned about, so a typo would start the node on its defaults without a word."""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
from typing import Iterable, List, Mapping


def check_params_file(path: str) -> str:
    """The parameter file a user named must exist: a RuntimeError (launch prints its one line)."""
    if not os.path.isfile(os.path.expanduser(path)):
        raise RuntimeError(f"params_file {path} not found: pass an existing YAML parameter file "
                           "(config/jetson.yaml in the package's share folder is the template)")
    return os.path.expanduser(path)


def params_for_node(path: str, node: str, default: str, launch_file: str) -> tuple:
    """(the parameter file to give ``node``, a warning or ""). Launch arguments are not scoped: an
    including launch file's own params_file (Nav2's bringup declares one, with a section per Nav2
    node) reaches this file too, and the node started on its built-in defaults without a word. A
    file with no section that can apply to ``node`` (a wildcard, or a key ending in its name) gives
    way to the launch file's ``default``, with a warning."""
    import yaml
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return path, ""  # the node itself reports a file it cannot read, with rcl's reason

    def sections(tree, keys=()):
        if isinstance(tree, dict):
            for k, v in tree.items():
                if k == "ros__parameters":
                    yield "/".join(keys)
                else:
                    yield from sections(v, keys + (str(k).strip("/"),))
    found = list(sections(doc))
    # rcl matches a section's last name to the node's (`*` and `**` as wildcards: `/**/amcl` is amcl's)
    if any(fnmatch.fnmatchcase(node, k.split("/")[-1] or "**") for k in found):
        return path, ""
    shown = ", ".join(k or "/" for k in found[:6]) + (", ..." if len(found) > 6 else "")
    return default, (f"params_file {path} has no parameters for {node} (its sections: {shown or 'none'}): "
                     f"{node} takes {launch_file}'s own {os.path.basename(default)}. An including launch file's "
                     f"params_file (as Nav2's bringup passes) reaches this file too: to set {node}'s parameters "
                     f"there, add a section `{node}:` (with ros__parameters) to it")


NAMESPACED_TF = ("true: under an including file's PushROSNamespace (a robot's, as Nav2's bringup pushes it) read "
                 "that namespace's tf and tf_static, as Nav2's nodes do; false: the global /tf")


def tf_remappings(configurations: Mapping[str, str]) -> list:
    """Under an including file's PushROSNamespace (a robot's, as Nav2's bringup pushes it), the robot's
    TF is that namespace's `tf` and `tf_static`: Nav2's bringup remaps every node's /tf there. tf2's
    listener subscribes to the absolute /tf, so the node needs the same remapping, to the pushed
    namespace itself (not the node's own, which node_namespace may extend). The launch argument
    namespaced_tf:=false keeps the global /tf (a namespace pushed only to group nodes)."""
    pushed = (configurations.get("ros_namespace") or "").strip().rstrip("/")
    if not pushed or not flag("namespaced_tf", configurations.get("namespaced_tf", "true")):
        return []
    pushed = pushed if pushed.startswith("/") else "/" + pushed
    return [("/tf", f"{pushed}/tf"), ("/tf_static", f"{pushed}/tf_static")]


# Launch configurations that are not arguments of anyone's misspelling here: launch_ros's own
# (PushROSNamespace, SetRemap, SetParameter) and the common arguments of Nav2's bringup files, which
# an including bringup shares with this file (`use_namespace` looked like a misspelt node_namespace)
FOREIGN_CONFIGURATIONS = {"namespace", "ros_namespace", "ros_remaps", "global_params", "use_namespace", "autostart",
                          "use_composition", "use_respawn", "log_level", "container_name", "slam", "map",
                          "use_localization", "use_intra_process_comms", "use_simulator", "use_robot_state_pub",
                          "use_rviz", "rviz_config_file", "headless", "world", "robot_name", "robot_sdf"}


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
        if name not in known and near and name not in FOREIGN_CONFIGURATIONS:
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
