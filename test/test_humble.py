"""ROS 2 Humble (JetPack 6's Ubuntu 22.04) lacks a few of Jazzy's APIs that the package uses; each
has a fallback. Humble cannot be installed here, so each test takes the API away from Jazzy's real
rclpy and checks that the fallback does the job (the import fallback: test_install.py)."""
import os
import time

import pytest

from seg_perception.runtime import node_process


def test_local_discovery_follows_the_distro(monkeypatch):
    """Humble's rcl reads only ROS_LOCALHOST_ONLY (ROS_AUTOMATIC_DISCOVERY_RANGE came with Iron): the
    live tools' node and client found each other on Jazzy only. Jazzy warns that ROS_LOCALHOST_ONLY is
    deprecated, so it is set only where ROS_DISTRO says humble."""
    for k in ("ROS_LOCALHOST_ONLY", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS"):
        monkeypatch.setenv(k, "")  # recorded as it was first, so that the end of the test restores it
        monkeypatch.delenv(k)
    monkeypatch.setenv("ROS_DISTRO", "humble")
    env = node_process.ros_env(150)
    assert env["ROS_LOCALHOST_ONLY"] == "1" and "ROS_AUTOMATIC_DISCOVERY_RANGE" not in env
    node_process.discover_as(env)  # this process's own participant, before it is created
    assert os.environ["ROS_LOCALHOST_ONLY"] == "1"
    monkeypatch.delenv("ROS_LOCALHOST_ONLY")
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    env = node_process.ros_env(150)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_STATIC_PEERS"] == "127.0.0.1"
    assert "ROS_LOCALHOST_ONLY" not in env
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")  # the user's choice stands
    assert node_process.ros_env(150)["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


def test_publisher_count_without_get_publisher_count(monkeypatch):
    """Humble's Subscription has no get_publisher_count (rclpy 4.0 added it): the demo, eval-bag's
    live mode and the benches waited on it and ended in an AttributeError there."""
    pytest.importorskip("rclpy")
    from rclpy.subscription import Subscription
    from std_msgs.msg import String
    from seg_perception.evaluation.participant import Participant

    monkeypatch.delattr(Subscription, "get_publisher_count")
    p = Participant(node_process.private_domain(), "humble_probe")
    try:
        sub = p.node.create_subscription(String, "/probe/topic", lambda _: None, 10)
        assert p.publisher_count(sub) == 0
        p.node.create_publisher(String, "/probe/topic", 10)
        end = time.monotonic() + 5
        while p.publisher_count(sub) != 1 and time.monotonic() < end:
            time.sleep(0.05)
        assert p.publisher_count(sub) == 1
        assert not hasattr(sub, "get_publisher_count")
    finally:
        p.start()  # close() joins the spin thread
        p.close()


def test_a_mistyped_parameter_is_named_without_list_parameters(monkeypatch):
    """Humble's Node has no list_parameters (rclpy 5.2 added it): the node's check of unknown
    parameters ended every start-up there in an AttributeError."""
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.node import Node
    from seg_perception.ros.lifecycle import ManagedSegmentationNode

    monkeypatch.delattr(Node, "list_parameters")
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", "modle:=x"], context=ctx)
    try:
        with pytest.raises(Exception, match="unknown parameter 'modle': did you mean 'model'"):
            ManagedSegmentationNode("seg_humble", context=ctx)
    finally:
        rclpy.shutdown(context=ctx)


def test_a_middleware_without_the_incompatible_qos_event_still_subscribes(monkeypatch, random_model):
    """Humble's rclpy registers a user's incompatible_qos callback without catching
    UnsupportedEventTypeError (Jazzy's catches it), so on a middleware without that event the
    camera subscription, and so activation, failed. Emulated on Jazzy's rclpy: the event raises."""
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from seg_perception.ros import node as node_module
    from seg_perception.ros.lifecycle import ManagedSegmentationNode

    class HumbleCallbacks(node_module.SubscriptionEventCallbacks):
        def create_event_handlers(self, *args, **kwargs):
            if self.incompatible_qos:
                raise node_module.UnsupportedEventTypeError("event type not supported by this middleware")
            return super().create_event_handlers(*args, **kwargs)
    monkeypatch.setattr(node_module, "SubscriptionEventCallbacks", HumbleCallbacks)
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", f"model:={random_model}", "-p", "threads:=1",
                     "-p", "image_topic:=/humble_events/image_raw"], context=ctx)
    node = None
    try:
        node = ManagedSegmentationNode("seg_humble_events", context=ctx)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.cameras[0].sub is not None
        assert node.count_subscribers("/humble_events/image_raw") == 1
    finally:
        if node is not None:
            node._release()
            node.destroy_node()
        rclpy.shutdown(context=ctx)
