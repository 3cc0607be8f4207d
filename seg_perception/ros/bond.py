"""The managed node's side of a bond with Nav2's lifecycle manager.

Nav2's manager (bond_timeout > 0, its default 4 s) waits after activating a node for that node's
heartbeat: bond/msg/Status on the relative topic `bond`, `id` the node's name, a fresh
`instance_id` per bond, `active` true. It takes the bond as formed on the first such message and
as broken when none comes for bond_timeout, and then takes every node it manages down (a robot
that lost its perception stops). Nav2's own nodes hold the bond from activate to deactivate, a
heartbeat every 0.1 s (Jazzy's parameter `bond_heartbeat_period`; fixed in Humble); this does the
same. Unlike theirs, a node stopped by Ctrl-C or SIGTERM sends no goodbye (rclpy has shut its
context down before the node could publish): the manager notices after its bond_timeout. The bond
package (Nav2 depends on it) has no PyPI wheel: without it there is no bond, and the manager needs
`bond_timeout: 0.0`.
"""
from __future__ import annotations

import uuid
from typing import Optional

from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.qos import QoSProfile

try:
    from bond.msg import Status
except ImportError:  # no ROS bond package (make setup builds one into the venv: scripts/build_interfaces.sh)
    Status = None

TOPIC = "bond"
HEARTBEAT_TIMEOUT_S = 4.0  # what the node side reports; the manager judges by its own bond_timeout

MISSING = ("no bond to a lifecycle manager: the ROS bond messages are not installed (ros-<distro>-bond, which "
           "Nav2 brings); a nav2_lifecycle_manager of this node needs bond_timeout: 0.0")


class BondHeartbeat:
    """Publishes the node's heartbeat from creation until close(), which says goodbye (active false)."""

    def __init__(self, node, period_s: float):
        self.node = node
        self.period_s = period_s
        self.instance_id = str(uuid.uuid4())
        self.pub = node.create_publisher(Status, TOPIC, QoSProfile(depth=5))  # bondcpp's: reliable, volatile
        # for a listener already there: the manager subscribes after activate, the timer's beats reach it
        self._beat(True)
        # wall time, as bondcpp's heartbeat timer: on the node's clock under use_sim_time the beats
        # stopped while /clock was paused or not yet running, and the manager took the node as dead
        self.timer = node.create_timer(period_s, lambda: self._beat(True), clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _beat(self, active: bool) -> None:
        msg = Status(id=self.node.get_name(), instance_id=self.instance_id, active=active,
                     heartbeat_timeout=HEARTBEAT_TIMEOUT_S, heartbeat_period=float(self.period_s))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)

    def close(self) -> None:
        self.node.destroy_timer(self.timer)
        try:
            self._beat(False)  # the manager's side ends now rather than after its timeout ...
            self.pub.wait_for_all_acked(Duration(seconds=0.5))  # ... if it arrives: not dropped with the writer
        except Exception:  # shutting down: the context may be gone already
            pass
        self.node.destroy_publisher(self.pub)


def start_bond(node, period_s: float) -> Optional[BondHeartbeat]:
    """A heartbeat for ``node``, or None (period 0: off; no bond messages: a warning)."""
    if period_s <= 0:
        return None
    if Status is None:
        node.get_logger().warning(MISSING)
        return None
    return BondHeartbeat(node, period_s)
