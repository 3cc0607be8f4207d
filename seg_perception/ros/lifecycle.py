"""segmentation_lifecycle_node: the segmentation node as a ROS 2 managed (lifecycle) node.

    configure   read parameters, load the model (build/load the TensorRT engine), create publishers
    activate    subscribe to the camera (and CameraInfo), publish, send label_info
    deactivate  unsubscribe, stop publishing; the model stays loaded
    cleanup     unload the model, remove the publishers
    shutdown    whatever of the above is still up

Same parameters and topics as segmentation_node (the default, which starts serving at once).
Works under nav2_lifecycle_manager: while active it keeps a bond with the manager (heartbeats on
`bond` every bond_heartbeat_period, as Nav2's own nodes do; ros/bond.py), so the manager notices
the node dying. See docs/navigation.md.
"""
from __future__ import annotations

import sys

from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .bond import start_bond
from .node import ConfigError, SegmentationNode, run


class ManagedSegmentationNode(SegmentationNode, LifecycleNode):
    managed = True
    _bond = None

    def _construct(self) -> None:
        service = getattr(self, "_service_change_state", None)
        if service is not None:
            service.callback = self._refusing_unavailable(service.callback)
        super()._construct()

    def _refusing_unavailable(self, change_state):
        """rclpy's change_state service (Humble, Jazzy) raises on a transition id the current state
        does not have (deactivate while inactive), and the exception ends the node's spin: the
        node died on a client's mistake. rclcpp answers success: false; so does this."""
        def guarded(req, resp):
            if not req.transition.label:  # (by label, rclpy itself answers false)
                available = {t[0]: t[1] for t in self._state_machine.available_transitions}
                if req.transition.id not in available:
                    state = self._state_machine.current_state[1]
                    self.get_logger().warning(
                        f"transition {req.transition.id} requested, but state '{state}' has none by that id "
                        f"(available: {', '.join(f'{i} {label}' for i, label in sorted(available.items()))}): "
                        "refused", throttle_duration_sec=5.0)  # a client retrying in a loop
                    resp.success = False
                    return resp
            return change_state(req, resp)
        return guarded

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as e:  # rclpy would turn any other into ErrorProcessing without a word
            what = str(e) if isinstance(e, (ConfigError, ParameterException)) else f"{type(e).__name__}: {e}"
            self.get_logger().error(f"cannot configure: {what}")
            self._cleanup()  # failed after loading the model: do not keep it, nor what it published on
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self.card.name} loaded ({self.pipeline.backend.describe()})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._activate()
        except Exception as e:
            self.get_logger().error(f"cannot activate: {type(e).__name__}: {e}")
            self._deactivate()  # what it subscribed and started before it failed; back to inactive
            return TransitionCallbackReturn.FAILURE
        self._bond = start_bond(self, self.bond_period)  # serving: the manager may count on it now
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._end_bond()
        if not self._step("deactivate", self._deactivate):
            return TransitionCallbackReturn.ERROR  # on_error takes down what is left
        self.get_logger().info("deactivated: not subscribed, model still loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._step("clean up", self._cleanup):
            return TransitionCallbackReturn.ERROR
        self.get_logger().info("cleaned up: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # released: back to unconfigured, where configure can start again; else finalized
        return TransitionCallbackReturn.SUCCESS if self._release() else TransitionCallbackReturn.FAILURE

    def _step(self, what: str, step) -> bool:
        """rclpy turns an exception in a transition into an error without a word (and a manager
        only says the transition failed): the reason goes to the log."""
        try:
            step()
            return True
        except Exception as e:
            self.get_logger().error(f"cannot {what}: {type(e).__name__}: {e}")
            return False

    def _end_bond(self) -> None:
        if self._bond is not None:
            bond, self._bond = self._bond, None
            bond.close()

    def _release(self) -> bool:
        """Take down whatever is up, each part even where another failed: a node left in error or
        finalized must not go on serving, nor leave its last drivable grid latched for a costmap
        that joins later. False if a part could not be released."""
        ok = self._step("end the bond", self._end_bond)
        if self.sub is not None or any(cam.sub is not None for cam in self.cameras):
            ok = self._step("stop serving", self._deactivate) and ok
        for cam in self.cameras:  # what deactivate did not get to, where it failed part way
            if cam.sub is not None:
                ok = self._step("unsubscribe", lambda: self.destroy_subscription(cam.sub)) and ok
                cam.sub = None
            with cam.publishing:  # a frame being published now goes out before its publishers go
                cam.ground = None
            if cam._ground is not None:  # (a no-op where deactivate stopped it)
                ok = self._step("stop the ground outputs", cam._ground.stop) and ok
            if cam.info is not None:  # the CameraInfo subscription (likewise)
                ok = self._step("unsubscribe from camera_info", cam.info.stop) and ok
        self.sub = None
        if self.pipeline is not None:
            ok = self._step("clean up", self._cleanup) and ok
        # (a no-op after a cleanup that got through; else the publishers and the diagnostics timer)
        return self._step("remove the outputs", self.remove_publishers) and ok


def main(args=None) -> int:
    return run(ManagedSegmentationNode, args)


if __name__ == "__main__":
    sys.exit(main())
