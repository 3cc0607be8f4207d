"""Segmentation for Nav2: ground projection on (config/nav2.yaml), managed by default.

    ros2 launch seg_perception nav2.launch.py
    ros2 launch seg_perception nav2.launch.py managed:=false          # the plain node
    ros2 launch seg_perception nav2.launch.py params_file:=/path/my_robot.yaml
    ros2 launch seg_perception nav2.launch.py node_namespace:=front name:=seg_front  # one node per camera
    ros2 launch seg_perception nav2.launch.py use_sim_time:=true   # under a simulator's /clock
    ros2 launch seg_perception nav2.launch.py max_rate:=10         # labels (and grids) at most 10 a second

managed:=true starts segmentation_lifecycle_node and a nav2_lifecycle_manager
(lifecycle_manager_<name>) that configures and activates it, bonded to it (Nav2's 4 s bond_timeout:
the manager notices the node dying; 0, no bond, where the ROS bond messages are missing or the params
file sets bond_heartbeat_period: 0.0). The manager's
parameters are set here, not in params_file: a params file copied from config/jetson.yaml works
too, and renaming the node renames what the manager manages.

node_namespace:=front puts the node (and its manager) in /front: its outputs become /front/segmentation/...
and its relative camera topic (camera/image_raw, the default) /front/camera/image_raw. One node per
camera needs one namespace each, else all of them publish on the same /segmentation/* topics.
Not named `namespace`: launch configurations are shared with an including file, and Nav2's bringup
declares its own `namespace` and already pushes it (PushROSNamespace), so a node reading it too
ended in /robot1/robot1.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch_ros.actions import Node

from seg_perception.ros.launch_arguments import (check_params_file, flag, manager_bond_timeout, misspelt_arguments,
                                                  namespace, number, params_for_node, require_package,
                                                  tf_remappings, NAMESPACED_TF)

DEFAULT_PARAMS = ("config", "nav2.yaml")


def _nodes(context, *args, **kwargs):
    params_file = check_params_file(context.launch_configurations["params_file"])
    from seg_perception.ros.node_parameters import parameter_names  # the node's own table: backend:=... is no argument here
    typos = misspelt_arguments(context.launch_configurations,
                               ["params_file", "managed", "name", "node_namespace", "use_sim_time", "max_rate",
                                "namespaced_tf"],
                               "nav2.launch.py",
                               node_parameters=parameter_names())
    managed = flag("managed", context.launch_configurations["managed"])
    name = context.launch_configurations["name"].strip() or "segmentation_node"
    params_file, foreign = params_for_node(
        params_file, name, os.path.join(get_package_share_directory("seg_perception"), *DEFAULT_PARAMS),
        "nav2.launch.py")
    # the node's and its manager's (relative: under an including file's PushROSNamespace, as Nav2's
    # bringup puts a robot's; the manager's node_names are resolved in its own namespace). Not the
    # configuration `namespace`: an including file's (Nav2 bringup's, already pushed) would be applied twice.
    ns = namespace(context.launch_configurations.get("node_namespace", ""), "node_namespace")
    # given: it wins over params_file's; not given: params_file's (or the default) stands.
    given = context.launch_configurations.get("use_sim_time", "").strip()
    sim_time = {"use_sim_time": flag("use_sim_time", given)} if given else {}
    rate = context.launch_configurations.get("max_rate", "").strip()  # the same: given, it wins
    node_overrides = {**sim_time, **({"max_rate": number("max_rate", rate)} if rate else {})}
    if managed:
        require_package("nav2_lifecycle_manager", "managed:=true (the default)",
                        "pass managed:=false to start the plain node")
    nodes = [Node(
        package="seg_perception",
        executable="segmentation_lifecycle_node" if managed else "segmentation_node",
        name=name,
        namespace=ns,
        output="screen",
        emulate_tty=True,
        parameters=[params_file, node_overrides],
        remappings=tf_remappings(context.launch_configurations),  # a robot's namespaced TF, as Nav2's nodes
    )]
    notes = [foreign] if foreign else []
    if managed:
        from seg_perception.ros import bond  # the node keeps a bond where it can import the messages
        bond_timeout, note = manager_bond_timeout(params_file, bond.Status is not None)
        notes += [note] if note else []
        nodes.append(Node(
            package="nav2_lifecycle_manager",
            executable="lifecycle_manager",
            name="lifecycle_manager_segmentation" if name == "segmentation_node" else f"lifecycle_manager_{name}",
            namespace=ns,
            output="screen",
            parameters=[{"autostart": True, "node_names": [name], "bond_timeout": bond_timeout}, sim_time],
        ))
    return [LogInfo(msg=f"WARNING: {t}") for t in typos + notes] + nodes


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("seg_perception"), *DEFAULT_PARAMS)
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameters for segmentation_node"),
        DeclareLaunchArgument("managed", default_value="true",
                              description="true: lifecycle node + nav2_lifecycle_manager; false: plain node"),
        DeclareLaunchArgument("name", default_value="segmentation_node",
                              description="the node's name"),
        DeclareLaunchArgument("node_namespace", default_value="",
                              description="the node's (and its manager's) namespace: outputs under "
                                          "/<node_namespace>/segmentation/..., the camera topic camera/image_raw "
                                          "under it too (one node per camera: a namespace each); relative: "
                                          "under an including file's PushROSNamespace"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: the /clock of a simulator or a bag played with --clock "
                                          "(empty: as params_file says)"),
        DeclareLaunchArgument("max_rate", default_value="",
                              description="at most this many frames a second segmented (and projected); "
                                          "empty: as params_file says"),
        DeclareLaunchArgument("namespaced_tf", default_value="true", description=NAMESPACED_TF),
        OpaqueFunction(function=_nodes),
    ])
