"""`-p NAME:=VALUE` values that rcl dropped without a word.

With a params file, rcl keeps the file's value when a command-line value has another type for
some pairs (measured with Jazzy's rcl: `-p input_width:=640.0` over the file's integer 0 keeps 0,
`-p use_compressed:=1` over false keeps false, `-p workers:=two` keeps 1), so the node would run on
a value the user did not give. The node compares what the command line says with what it got.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import yaml


def command_line_values(argv: Sequence[str]) -> Dict[str, str]:
    """NAME -> VALUE text of every `-p`/`--param NAME:=VALUE` in the ROS arguments (the last one
    of a name wins, as in rcl)."""
    out: Dict[str, str] = {}
    ros = False
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--ros-args":
            ros = True
        elif a in ("--", "--enable-ros-args"):
            ros = a != "--"
        elif ros and a in ("-p", "--param") and i + 1 < len(args) and ":=" in args[i + 1]:
            name, value = args[i + 1].split(":=", 1)
            if ":" not in name:  # (a node-name prefix is not rcl's syntax for -p: left alone)
                out[name] = value
    return out


def _comparable(v):
    """A value as rcl could have stored it: numbers as floats (10 and 10.0 alike), lists itemwise."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_comparable(x) for x in v]
    return str(v)


def not_taken(given: Dict[str, str], taken: Dict[str, object], names: Iterable[str]) -> List[Tuple[str, str, object]]:
    """(name, the command line's text, the value the node got) for each of ``names`` whose value
    on the command line is not the one the node got."""
    out = []
    for name in names:
        if name not in given or name not in taken:
            continue
        text = given[name]
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # not judged: rcl's YAML reading is the authority
        if parsed == [] or parsed is None:
            continue  # an empty list or null reaches rclpy untyped (the node reads it as given)
        if isinstance(parsed, str) and not isinstance(taken[name], str):
            try:  # 1e3: a number for rcl, text for PyYAML
                parsed = float(parsed)
            except ValueError:
                pass
        if _comparable(parsed) != _comparable(taken[name]):
            out.append((name, text, taken[name]))
    return out
