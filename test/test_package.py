"""The ament_python package as `ros2 launch` sees it: colcon (from PyPI) builds it into
a temporary install space exactly as on a ROS 2 system."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CORE_ONLY, REPO


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    base = tmp_path_factory.mktemp("colcon")
    colcon = Path(sys.executable).parent / "colcon"
    if CORE_ONLY and not colcon.is_file():
        pytest.skip("colcon is a development tool (requirements-dev.txt), not in a core install")
    assert colcon.is_file(), "colcon is not installed (requirements-dev.txt)"
    listing = subprocess.run([str(colcon), "list", "--base-paths", str(REPO)], capture_output=True,
                             text=True, cwd=base, timeout=120)
    assert "seg_perception" in listing.stdout and "(ros.ament_python)" in listing.stdout, (
        "colcon does not see an ament_python package (a package.xml catkin_pkg rejects?): "
        + listing.stdout + listing.stderr)
    res = subprocess.run([str(colcon), "build", "--base-paths", str(REPO), "--build-base", str(base / "build"),
                          "--install-base", str(base / "install"), "--packages-select", "seg_perception"],
                         capture_output=True, text=True, cwd=base, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return base / "install" / "seg_perception"


def test_launch_layout(install):
    for program in ("segmentation_node", "segmentation_lifecycle_node"):  # nav2.launch.py runs the second
        exe = install / "lib" / "seg_perception" / program
        assert exe.is_file() and exe.stat().st_mode & 0o111, program
    share = install / "share" / "seg_perception"
    assert (share / "package.xml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "seg_perception").is_file()
    # every launch file, parameter file (the large-frame DDS profile among them), card and the
    # weights and ONNX files the cards name
    for folder, patterns in (("launch", ["*.launch.py"]), ("config", ["*.yaml", "*.xml"]),
                             ("models", ["*.yaml", "*.pt", "*.onnx", "*.md"])):
        shipped = sorted(p.name for pat in patterns for p in (REPO / folder).glob(pat))
        assert shipped and sorted(p.name for pat in patterns for p in (share / folder).glob(pat)) == shipped, folder
    assert (share / "launch" / "jetson.launch.py").is_file() and (share / "config" / "jetson.yaml").is_file()


def test_package_xml_declares_ros_dependencies():
    import xml.etree.ElementTree as ET
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    execs = {e.text for e in root.findall("exec_depend")}
    # what the code imports (cv_bridge is not: images are converted by the package itself)
    for dep in ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "launch", "launch_ros",
                "python3-numpy", "python3-opencv", "python3-matplotlib"):
        assert dep in execs, dep
    assert "cv_bridge" not in execs
    tests = {e.text for e in root.findall("test_depend")}
    assert "python3-pytest" in tests


def test_launch_file_arguments():
    """launch/launch_ros have no wheels here: check the file's declared arguments statically."""
    tree = ast.parse((REPO / "launch" / "jetson.launch.py").read_text())
    overrides = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], "id", "") == "OVERRIDES")
    names = {k.value for k in overrides.value.keys}
    assert names == {"model", "precision", "input_width", "input_height", "image_topic", "use_compressed", "max_rate"}
    src = (REPO / "launch" / "jetson.launch.py").read_text()
    assert '"params_file"' in src and '"jetson.yaml"' in src and 'executable="segmentation_node"' in src


def test_launch_argument_checks(tmp_path):
    """What the launch files do with a user's arguments (launch itself cannot run here)."""
    from seg_perception.ros.launch_arguments import check_params_file, misspelt_arguments
    with pytest.raises(RuntimeError, match="params_file /nope/my.yaml not found"):
        check_params_file("/nope/my.yaml")
    mine = tmp_path / "my.yaml"
    mine.write_text("/**: {ros__parameters: {}}")
    assert check_params_file(str(mine)) == str(mine)
    known = ["model", "precision", "input_width", "params_file"]
    got = misspelt_arguments({"modle": "m", "input_widht": "320", "model": "x", "robot_name": "r"}, known,
                             "jetson.launch.py")
    assert got == ["launch argument 'input_widht' is not one of jetson.launch.py's: did you mean 'input_width'? "
                   "(it is ignored)",
                   "launch argument 'modle' is not one of jetson.launch.py's: did you mean 'model'? (it is ignored)"]
    from seg_perception.ros.launch_arguments import require_package
    with pytest.raises(RuntimeError, match=r"managed:=true needs the ROS package no_such_pkg, which is not "
                                           r"installed \(sudo apt install ros-\$\{ROS_DISTRO\}-no-such-pkg\); "
                                           r"or pass managed:=false"):
        require_package("no_such_pkg", "managed:=true", "pass managed:=false")
    assert 'require_package("nav2_lifecycle_manager"' in (REPO / "launch" / "nav2.launch.py").read_text()
    from seg_perception.ros.launch_arguments import flag, number, whole_number
    assert number("max_rate", " 10") == 10.0 and isinstance(number("max_rate", "10"), float)  # rclpy: a double
    with pytest.raises(RuntimeError, match=r"launch argument max_rate:=fast must be a number"):
        number("max_rate", "fast")
    assert flag("managed", "True") is True and flag("managed", " off") is False
    with pytest.raises(RuntimeError, match="launch argument managed:=flase must be true or false"):
        flag("managed", "flase")  # was read as false: the plain node started without a word
    assert whole_number("input_width", "640") == 640
    with pytest.raises(RuntimeError, match=r"launch argument input_width:=640.0 must be a whole number"):
        whole_number("input_width", "640.0")
    assert 'flag("managed", context.launch_configurations["managed"])' in (REPO / "launch" / "nav2.launch.py").read_text()
    assert '"use_compressed": flag' in (REPO / "launch" / "jetson.launch.py").read_text()
    for launch in ("jetson", "nav2"):  # both launch files run the checks
        src = (REPO / "launch" / f"{launch}.launch.py").read_text()
        assert "check_params_file(context.launch_configurations[\"params_file\"])" in src
        assert "misspelt_arguments(context.launch_configurations" in src


def test_config_sets_every_node_parameter():
    import yaml
    from seg_perception.ros.node_parameters import PARAMETERS
    params = yaml.safe_load((REPO / "config" / "jetson.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)


def test_nav2_config_sets_every_parameter_and_launches_both_variants():
    import yaml
    from seg_perception.ros.ground_outputs import GROUND_PARAMETERS
    from seg_perception.ros.node_parameters import PARAMETERS
    cfg = yaml.safe_load((REPO / "config" / "nav2.yaml").read_text())
    params = cfg["/**"]["ros__parameters"]
    ground = {f"ground.{k}": v for k, v in params.pop("ground").items()}
    assert set(params) == set(PARAMETERS) and set(ground) == set(GROUND_PARAMETERS)
    assert ground["ground.enable"] is True
    src = (REPO / "launch" / "nav2.launch.py").read_text()
    # the manager's parameters are the launch file's own (a params file copied from jetson.yaml has none)
    assert 'parameters=[{"autostart": True, "node_names": [name], "bond_timeout": bond_timeout}, sim_time]' in src
    assert '"segmentation_lifecycle_node" if managed else "segmentation_node"' in src and '"nav2.yaml"' in src


@pytest.mark.parametrize("namespace,name", [("", "segmentation_node"), ("robot1", "segmentation_node"),
                                            ("", "seg_front")])
def test_nav2_config_reaches_nodes_under_a_namespace(namespace, name):
    """Sections keyed by bare node names reached /segmentation_node only: under a robot's namespace
    (PushRosNamespace, as Nav2 multi-robot launches do), or renamed (one node per camera), the node
    ran on its defaults, ground projection off. rcl's own parser decides."""
    import rclpy
    from rclpy.node import Node
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(REPO / "config" / "nav2.yaml")], context=ctx)
    nodes = []
    try:
        nodes.append(Node(name, namespace=namespace, context=ctx, automatically_declare_parameters_from_overrides=True))
        seg = nodes[0]
        assert seg.get_parameter("ground.enable").value is True and seg.get_parameter("model").value == "rdsnet_camvid"
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown(context=ctx)


def test_readme_documents_every_node_parameter():
    """The node's PARAMETERS table (plus the two array parameters declared beside it) and the
    README's parameter table name the same parameters."""
    import re
    from seg_perception.ros.node_parameters import PARAMETERS
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| parameter | default | meaning |"):]
    table = table[:table.index("\n\n")]
    documented = {n for row in table.splitlines()[2:] for n in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert documented == set(PARAMETERS) | {"image_topics", "drivable_classes"}


def test_package_log_records_reach_one_node_logger_once():
    """Each node construction added a forwarder of the package's log records to its ROS logger:
    a second node in one process (a container, a test) logged every record twice, and a
    destroyed node's forwarder stayed. Now one forwarder, to the newest live node; with the last
    node gone the package logs as a library again (pytest's caplog sees its records)."""
    import logging

    import rclpy
    from seg_perception.ros.lifecycle import ManagedSegmentationNode
    from seg_perception.ros.node import _LOG_FORWARDER, _RosLogHandler

    pkg = logging.getLogger("seg_perception")
    before = (pkg.level, pkg.propagate)

    def forwarders():
        return [h for h in pkg.handlers if isinstance(h, _RosLogHandler)]
    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    try:
        first = ManagedSegmentationNode("seg_a", context=ctx)
        second = ManagedSegmentationNode("seg_b", context=ctx)
        assert forwarders() == [_LOG_FORWARDER] and not pkg.propagate
        assert _LOG_FORWARDER.ros_loggers[-1].name == "seg_b"
        second.destroy_node()
        assert forwarders() == [_LOG_FORWARDER] and _LOG_FORWARDER.ros_loggers[-1].name == "seg_a"
        first.destroy_node()
        assert forwarders() == [] and (pkg.level, pkg.propagate) == before
    finally:
        rclpy.shutdown(context=ctx)
    # A node whose construction fails (no destroy_node follows) leaves no forwarder either.
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", "modle:=x"], context=ctx)
    try:
        with pytest.raises(Exception, match="unknown parameter 'modle'"):
            ManagedSegmentationNode("seg_c", context=ctx)
        assert forwarders() == [] and (pkg.level, pkg.propagate) == before
    finally:
        rclpy.shutdown(context=ctx)


def test_the_log_forwarder_takes_every_severity_in_any_order():
    """rclpy refuses a second severity from one call site ("Logger severity cannot be changed between
    calls"): the forwarder logged all from one line, so a backend's WARNING then INFO stopped the
    node's start-up (ConfigError) and a 16-bit frame's warning after an INFO rejected the frame."""
    import logging

    import rclpy
    from seg_perception.ros.node import _RosLogHandler
    handler = _RosLogHandler()
    handler.ros_loggers.append(rclpy.logging.get_logger("forwarder_test"))
    for level in (logging.WARNING, logging.INFO, logging.ERROR, logging.INFO, logging.WARNING):
        handler.emit(logging.makeLogRecord({"levelno": level, "levelname": logging.getLevelName(level),
                                            "msg": f"a {logging.getLevelName(level)} record"}))


def test_a_colcon_install_finds_the_node_beside_its_command(tmp_path, monkeypatch):
    """colcon puts the console scripts in install/seg_perception/lib/seg_perception, not on PATH, and
    the interpreter is /usr/bin/python3: eval-bag --mode live, demo and bench-node could not start
    the node there ("not installed" after the workspace was sourced)."""
    import sys
    from seg_perception.runtime.node_process import node_executable
    lib = tmp_path / "install" / "seg_perception" / "lib" / "seg_perception"
    lib.mkdir(parents=True)
    for script in ("seg-perception", "segmentation_node"):
        (lib / script).write_text("#!/usr/bin/python3\n")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "usr_bin" / "python3"))
    monkeypatch.setattr(sys, "argv", [str(lib / "seg-perception"), "demo"])
    monkeypatch.setenv("PATH", str(tmp_path / "nothing_here"))
    assert node_executable() == str(lib / "segmentation_node")


def _launch_file(name: str, monkeypatch):
    """launch/<name>.launch.py on stand-ins for launch and launch_ros (no wheels here) that record
    what it builds; the package share is the checkout."""
    import importlib.util
    import types

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda entities: list(entities)
    actions = types.ModuleType("launch.actions")
    for cls in ("DeclareLaunchArgument", "LogInfo", "OpaqueFunction"):
        setattr(actions, cls, type(cls, (Action,), {}))
    launch.actions = actions
    launch_ros = types.ModuleType("launch_ros")
    launch_ros.actions = types.ModuleType("launch_ros.actions")
    launch_ros.actions.Node = type("Node", (Action,), {})
    for mod_name, mod in (("launch", launch), ("launch.actions", actions), ("launch_ros", launch_ros),
                          ("launch_ros.actions", launch_ros.actions)):
        monkeypatch.setitem(sys.modules, mod_name, mod)
    import ament_index_python.packages as index
    monkeypatch.setattr(index, "get_package_share_directory", lambda package: str(REPO))  # nav2_lifecycle_manager too
    spec = importlib.util.spec_from_file_location(f"{name}_launch", REPO / "launch" / f"{name}.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def run(**arguments):
        """What the launch file starts for `ros2 launch ... NAME:=VALUE ...`: (nodes, warnings)."""
        import types as t
        desc = mod.generate_launch_description()
        declared = {a.args[0]: a.kwargs["default_value"] for a in desc if type(a).__name__ == "DeclareLaunchArgument"}
        opaque = next(a for a in desc if type(a).__name__ == "OpaqueFunction")
        out = opaque.kwargs["function"](t.SimpleNamespace(launch_configurations={**declared, **arguments}))
        return ([a for a in out if type(a).__name__ == "Node"],
                [a.kwargs["msg"] for a in out if type(a).__name__ == "LogInfo"])
    return run


def test_nav2_launch_namespace_separates_one_node_per_camera(monkeypatch):
    """name:=seg_front and name:=seg_rear alone both published /segmentation/* (one latched grid overwrote
    the other): node_namespace:= puts the node and its lifecycle manager (which then finds it) in their own.
    Not `namespace`: Nav2's bringup declares that and pushes it itself, so the node read it too and ended
    in /robot1/robot1."""
    run = _launch_file("nav2", monkeypatch)
    nodes, warnings = run(node_namespace="front", name="seg_front")
    assert warnings == []
    assert [(n.kwargs["name"], n.kwargs["namespace"]) for n in nodes] == [
        ("seg_front", "front"), ("lifecycle_manager_seg_front", "front")]
    assert nodes[1].kwargs["parameters"][0]["node_names"] == ["seg_front"]  # relative: in the manager's namespace
    nodes, _ = run(node_namespace="/rear/", managed="false")
    assert [(n.kwargs["executable"], n.kwargs["namespace"]) for n in nodes] == [("segmentation_node", "/rear")]
    nodes, _ = run()
    assert [n.kwargs["namespace"] for n in nodes] == [None, None]  # none given: an including file's, if any
    with pytest.raises(RuntimeError, match="launch argument node_namespace:=front camera is not a ROS namespace"):
        run(node_namespace="front camera")
    # an including file's own `namespace` (Nav2 bringup: declared and already pushed) is not applied again
    nodes, warnings = run(namespace="robot1")
    assert [n.kwargs["namespace"] for n in nodes] == [None, None]
    assert len(warnings) == 1 and "launch configuration 'namespace' (given on the command line or by an " \
        "including launch file) is not an argument of nav2.launch.py" in warnings[0], warnings
    nodes, _ = run(namespace="robot1", node_namespace="front", managed="false")
    assert [n.kwargs["namespace"] for n in nodes] == ["front"]  # under the bringup's push: /robot1/front
    docs = (REPO / "docs" / "navigation.md").read_text()
    assert "node_namespace:=front name:=seg_front" in docs and " namespace:=" not in docs


@pytest.mark.parametrize("launch", ["jetson", "nav2"])
def test_node_parameters_given_as_launch_arguments_are_named_as_such(monkeypatch, launch):
    """backend:=onnxruntime workers:=2 set nothing without a word, and image_topics:=[...] got "did you
    mean 'image_topic'?": a node parameter that is no launch argument is named as one, without the hint."""
    run = _launch_file(launch, monkeypatch)
    _, warnings = run(backend="onnxruntime", workers="2", image_topics="['/a/image_raw']", **{"ground.enable": "true"})
    names = ["backend", "ground.enable", "image_topics", "workers"]
    assert len(warnings) == len(names), warnings
    for name, w in zip(names, warnings):
        assert w.startswith(f"WARNING: launch configuration '{name}' (given on the command line or by an including "
                            f"launch file) is a node parameter's name, not an argument of {launch}.launch.py: "
                            "node parameters are set in params_file"), w
        assert "it is ignored" not in w  # an including file's (a bringup's model:=) is its own, not ignored there
        assert "did you mean" not in w
    typo, meant = ("modle", "model") if launch == "jetson" else ("node_namespce", "node_namespace")
    _, warnings = run(**{typo: "x"})  # a typo still gets its hint
    assert len(warnings) == 1 and f"did you mean '{meant}'?" in warnings[0], warnings
    if launch == "jetson":  # those that are jetson.launch.py's arguments are no warning
        assert run(model="x", image_topic="/front/image_raw", max_rate="10")[1] == []
    # max_rate is an argument of both: reaches the node as a double, over the params file's
    nodes, warnings = run(max_rate="7.5")
    assert warnings == [] and nodes[0].kwargs["parameters"][1] == {"max_rate": 7.5}
    assert run()[0][0].kwargs["parameters"][1] == {}  # not given: the params file's


def test_readme_says_how_drivable_classes_returns_to_the_cards():
    """Once set, drivable_classes cannot be unset (rclpy: a static parameter is not undeclared) and
    [] means no drivable class: the README says the way back to the card's classes."""
    readme = (REPO / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `drivable_classes` |"))
    assert "`[]`: none" in row and "to return to the card's classes, restart the node" in row, row


@pytest.mark.parametrize("launch", ["jetson", "nav2"])
def test_an_including_bringups_params_file_and_namespace(monkeypatch, tmp_path, launch):
    """Included by a Nav2 bringup (which declares params_file and pushes a robot's namespace, and whose
    arguments reach this file): the bringup's params file, with a section per Nav2 node and none for
    this one, started the node on its built-in defaults without a word (ground projection off); the
    node read the global /tf where the bringup remaps every node's TF into the robot's namespace; and
    PushROSNamespace's own configuration was warned about as a misspelt node_namespace."""
    run = _launch_file(launch, monkeypatch)
    default = str(REPO / "config" / ("nav2.yaml" if launch == "nav2" else "jetson.yaml"))
    bringup = tmp_path / "nav2_params.yaml"
    bringup.write_text("amcl:\n  ros__parameters: {alpha1: 0.2}\nbt_navigator:\n  ros__parameters: {}\n")
    nodes, warnings = run(params_file=str(bringup), ros_namespace="/robot1", use_namespace="true")
    assert nodes[0].kwargs["parameters"][0] == default
    assert len(warnings) == 1 and f"params_file {bringup} has no parameters for segmentation_node (its sections: " \
        "amcl, bt_navigator)" in warnings[0] and "add a section `segmentation_node:`" in warnings[0], warnings
    assert nodes[0].kwargs["remappings"] == [("/tf", "/robot1/tf"), ("/tf_static", "/robot1/tf_static")]
    # a section for the node (RewrittenYaml puts a bringup's under the namespace), or a wildcard: taken
    for text in ("robot1:\n  segmentation_node:\n    ros__parameters: {max_rate: 5.0}\n",
                 "/**:\n  ros__parameters: {max_rate: 5.0}\n", "/robot1/segmentation_node:\n  ros__parameters: {}\n"):
        bringup.write_text("amcl:\n  ros__parameters: {}\n" + text)
        nodes, warnings = run(params_file=str(bringup))
        assert nodes[0].kwargs["parameters"][0] == str(bringup) and warnings == [], (text, warnings)
        assert nodes[0].kwargs["remappings"] == []  # no namespace pushed: /tf itself
    if launch == "nav2":  # renamed: its section is by its name
        bringup.write_text("seg_front:\n  ros__parameters: {}\n")
        nodes, warnings = run(params_file=str(bringup), name="seg_front")
        assert nodes[0].kwargs["parameters"][0] == str(bringup) and warnings == []
    # a section of another node under a wildcard namespace does not reach this one
    bringup.write_text("/**/amcl:\n  ros__parameters: {}\n")
    nodes, warnings = run(params_file=str(bringup))
    assert nodes[0].kwargs["parameters"][0] == default and len(warnings) == 1, warnings
    if launch == "jetson":  # a bringup's own `namespace` is no misspelt namespaced_tf
        assert run(namespace="robot1")[1] == []
    # a namespace pushed only to group nodes, TF global: namespaced_tf:=false keeps /tf
    nodes, warnings = run(ros_namespace="/robot1", namespaced_tf="false")
    assert nodes[0].kwargs["remappings"] == [] and warnings == []
    with pytest.raises(RuntimeError, match="launch argument namespaced_tf:=maybe must be true or false"):
        run(ros_namespace="/robot1", namespaced_tf="maybe")
