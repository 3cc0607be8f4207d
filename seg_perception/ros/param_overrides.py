"""`-p NAME:=VALUE` values that never reached the node, without a word.

rcl stores a `-p` value beside a params file's value of the same (`/**`) entry when their types
differ, and rclpy takes the first one set in its order: bool, integer, double, string, then the
arrays (bool, integer, double, string). So a command-line value of a later type than the file's
is dropped for the file's: `-p input_width:=640.0` over the file's integer 0 keeps 0,
`-p use_compressed:=1` over false keeps false, `-p workers:=two` keeps 1. The node compares the
type of what it got with the type of what the command line says (only for a node started by
`run()`, whose arguments these are; `ros2 launch` passes parameters as files).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

# rclpy's order of the value types (rclpy/src/rclpy/node.cpp, _parameter_from_rcl_variant)
ORDER = ("bool", "integer", "double", "string", "bool array", "integer array", "double array", "string array")
# words rcl reads as booleans that PyYAML (YAML 1.1) leaves as text
RCL_BOOLS = {"y", "Y", "n", "N"}


def command_line_values(argv: Sequence[str], node_name: str = "") -> Dict[str, str]:
    """NAME -> VALUE text of every `-p`/`--param [NODE:]NAME:=VALUE` in the ROS arguments that
    applies to ``node_name`` (the last one of a name wins)."""
    out: Dict[str, str] = {}
    ros = False
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--ros-args":
            ros = True
        elif a == "--":
            ros = False
        elif ros and a in ("-p", "--param") and i + 1 < len(args) and ":=" in args[i + 1]:
            name, value = args[i + 1].split(":=", 1)
            node, _, bare = name.rpartition(":")  # rcl's optional node-name prefix
            if not node or node.lstrip("/") == node_name:
                out[bare] = value
    return out


def kind(value) -> Optional[str]:
    """The value's type in rclpy's order (None: none to judge by, e.g. an empty list)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)) and value:
        kinds = {kind(v) for v in value}
        if kinds <= {"integer", "double"}:
            return "double array" if "double" in kinds else "integer array"
        return f"{kinds.pop()} array" if len(kinds) == 1 else None
    return None


def text_kind(text: str) -> Optional[str]:
    """The type rcl gives a `-p` value's text (PyYAML's reading, with rcl's extra booleans)."""
    if text.strip() in RCL_BOOLS:
        return "bool"
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # not judged: rcl's reading is the authority
    if isinstance(parsed, str):  # numbers YAML 1.1 leaves as text, that rcl's strtoll / strtod read
        t = parsed.strip()
        if "_" in t:  # (Python's int() and float() take 1_000; rcl does not)
            return "string"
        for read, what in ((lambda v: int(v, 0), "integer"), (float, "double"), (float.fromhex, "double")):
            try:
                read(t)  # 1e+300, inf, 0x1p3
                return what
            except ValueError:
                pass
        return "string"
    return kind(parsed)


def not_taken(given: Dict[str, str], taken: Dict[str, object], names: Iterable[str]) -> List[Tuple[str, str, object]]:
    """(name, the command line's text, the value the node got) for each of ``names`` whose value
    the node got is of an earlier type in rclpy's order than the command line's: the params file's
    value, taken instead of the command line's."""
    out = []
    for name in names:
        if name not in given or name not in taken:
            continue
        want, got = text_kind(given[name]), kind(taken[name])
        if want in ORDER and got in ORDER and ORDER.index(got) < ORDER.index(want):
            out.append((name, given[name], taken[name]))
    return out
