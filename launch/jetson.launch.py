"""Start segmentation_node with a YAML parameter file and optional overrides.

    ros2 launch seg_perception jetson.launch.py
    ros2 launch seg_perception jetson.launch.py precision:=int8 image_topic:=/front/image_raw
    ros2 launch seg_perception jetson.launch.py max_rate:=10   # labels at 10 Hz from a faster camera

Arguments left empty keep the value from params_file.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch_ros.actions import Node

from seg_perception.ros.launch_arguments import (check_params_file, flag, misspelt_arguments, number,
                                                  params_for_node, tf_remappings, whole_number, NAMESPACED_TF)

DEFAULT_PARAMS = ("config", "jetson.yaml")

# launch argument -> parameter type (name, value -> value); every one defaults to '' (= keep the YAML value)
OVERRIDES = {
    "model": lambda n, v: v,
    "precision": lambda n, v: v,
    "input_width": whole_number,
    "input_height": whole_number,
    "image_topic": lambda n, v: v,
    "use_compressed": flag,
    "max_rate": number,
}


def _node(context, *args, **kwargs):
    overrides = {}
    for name, cast in OVERRIDES.items():
        value = context.launch_configurations.get(name, "")
        if value != "":
            overrides[name] = cast(name, value)
    params_file = check_params_file(context.launch_configurations["params_file"])
    from seg_perception.ros.node_parameters import parameter_names  # the node's own table: backend:=... is no argument here
    typos = misspelt_arguments(context.launch_configurations, [*OVERRIDES, "params_file", "namespaced_tf"],
                               "jetson.launch.py",
                               node_parameters=parameter_names())
    share = get_package_share_directory("seg_perception")
    params_file, foreign = params_for_node(params_file, "segmentation_node", os.path.join(share, *DEFAULT_PARAMS),
                                           "jetson.launch.py")
    # Large camera frames between processes (Fast DDS): the shipped transport profile unless the
    # user set one. The camera driver's process needs the same variable (README "DDS notes").
    env = {}
    if not (os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")):
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = os.path.join(share, "config", "fastdds_large_frames.xml")
    return [LogInfo(msg=f"WARNING: {t}") for t in typos + ([foreign] if foreign else [])] + [Node(
        package="seg_perception",
        executable="segmentation_node",
        name="segmentation_node",
        output="screen",
        emulate_tty=True,
        parameters=[params_file, overrides],
        remappings=tf_remappings(context.launch_configurations),  # a robot's namespaced TF (ground.use_tf)
        additional_env=env,
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("seg_perception"), *DEFAULT_PARAMS)
    args = [DeclareLaunchArgument(name, default_value="", description=f"override the '{name}' parameter")
            for name in OVERRIDES]
    args.append(DeclareLaunchArgument("params_file", default_value=default_params,
                                      description="YAML parameter file for segmentation_node"))
    args.append(DeclareLaunchArgument("namespaced_tf", default_value="true", description=NAMESPACED_TF))
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
