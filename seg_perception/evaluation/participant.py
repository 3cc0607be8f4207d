"""This process's own ROS 2 participant, for the tools that feed frames to a segmentation node
and record what it sends back (live evaluation, the camera and ground benches).

It has its own rclpy context on the domain it is given, so nothing global is touched and several
can live in one process, and its own spin thread, so callbacks run while the caller publishes.
A subclass creates its publishers and subscriptions on ``self.node``, then calls ``start()``."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence


class Participant:
    def __init__(self, domain_id: Optional[int], name: str):
        import rclpy
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"{name}_{os.getpid()}", context=self.context,
                                      start_parameter_services=False)
        self.lock = threading.Lock()  # guards what the callbacks record
        self._stop = threading.Event()

    def publisher_count(self, sub) -> int:
        """Publishers matched to ``sub`` (Humble's Subscription has no get_publisher_count: the
        graph's count of its topic there, which counts a publisher before it is matched, or one whose
        QoS never matches; the callers' settle time after discovery covers the first)."""
        try:
            return sub.get_publisher_count()
        except AttributeError:
            return self.node.count_publishers(sub.topic_name)

    def start(self) -> None:
        from rclpy.executors import SingleThreadedExecutor
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name=f"{self.node.get_name()}_spin", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context was shut down under us: leave quietly
                if not self.context.ok():
                    return
                raise

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        try:
            self.executor.remove_node(self.node)
            self.node.destroy_node()
            self.executor.shutdown(timeout_sec=1)
        finally:
            self.rclpy.try_shutdown(context=self.context)


def wait_until_up(ready: Callable[[], bool], nodes: Sequence, timeout: float, logs: Path) -> None:
    """Waits until ready() holds (the node(s) matched and reporting), then half a second more for
    discovery to settle; a node process that exits, or the timeout, is a RuntimeError naming the log."""
    end = time.monotonic() + timeout
    while not ready():
        for n in nodes:
            if not n.running():
                raise RuntimeError(f"segmentation_node exited: {n.failure()} (log {n.log_path})")
        if time.monotonic() > end:
            raise RuntimeError(f"segmentation_node did not come up in {timeout:.0f} s (log {logs})")
        time.sleep(0.05)
    time.sleep(0.5)
