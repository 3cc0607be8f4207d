"""segmentation_lifecycle_node driven through its lifecycle services (lifecycle_msgs
GetState / ChangeState) by a real client in this process, over DDS."""
from __future__ import annotations

import time

import pytest

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import CameraInfo

from conftest import REPO
from ros_harness import Harness, raw_image, start_node
from seg_perception.data.bag_io import camera_info_topic
from test_node import new_key


def lifecycle_node(params, tmp_path, ns: str, client: str):
    """The lifecycle node in its own namespace /ns (its camera /ns/camera/image_raw, its outputs
    /ns/segmentation/...), so that no other test's node, a stray one included, can answer for it;
    and a harness for it."""
    h = Harness(client, image_topic=f"/{ns}/camera/image_raw", out_ns=f"/{ns}")
    try:
        proc = start_node(params, tmp_path / "node.log", program="segmentation_lifecycle_node", namespace=f"/{ns}")
    except BaseException:
        h.close()
        raise
    return proc, h


class LifecycleClient:
    def __init__(self, h: Harness, node: str = ""):
        self.h = h
        node = node or f"{h.out_ns}/segmentation_node"  # the node of lifecycle_node(), by default
        self.get = h.node.create_client(GetState, f"{node}/get_state")
        self.change = h.node.create_client(ChangeState, f"{node}/change_state")
        assert self.get.wait_for_service(timeout_sec=60), "no get_state service"
        assert self.change.wait_for_service(timeout_sec=60), "no change_state service"

    def _call(self, client, req, timeout=60.0, ask_again_after=None):
        """The service's answer (the harness's executor thread completes the futures). With
        ``ask_again_after``, for an idempotent request: asked again after that many seconds without an
        answer, as DDS loses an answer sent before the server's reply writer has matched this client
        (wait_for_service sees the server, not that match: a first call right after it can go unanswered)."""
        futures = [client.call_async(req)]
        end = time.monotonic() + timeout
        asked = time.monotonic()
        while not any(f.done() for f in futures) and time.monotonic() < end:
            if ask_again_after is not None and time.monotonic() - asked > ask_again_after:
                futures.append(client.call_async(req))
                asked = time.monotonic()
            time.sleep(0.02)
        done = [f for f in futures if f.done()]
        assert done, f"{client.srv_name} did not answer (asked {len(futures)} times in {timeout:g} s)"
        return done[0].result()

    def state(self) -> int:
        return self._call(self.get, GetState.Request(), ask_again_after=5.0).current_state.id

    def transition(self, tid: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=tid))).success


def frame_served(h: Harness, img, timeout: float) -> bool:
    key = new_key("lc")
    h.pub_raw.publish(raw_image(img, "rgb8", key))
    try:
        h.wait_for(lambda: key in h.received["labels"], timeout, "labels")
        return True
    except AssertionError:
        return False


def wait_subscribed(h: Harness, want: bool, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while (h.pub_raw.get_subscription_count() > 0) != want and time.monotonic() < end:
        time.sleep(0.05)
    assert (h.pub_raw.get_subscription_count() > 0) == want, f"camera subscription should be {want}"


def inactive_said(h: Harness) -> bool:
    """The newest diagnostics say the node is inactive (caller holds h.lock)."""
    return bool(h.diagnostics) and h.diagnostics[-1]["_message"] == \
        f"inactive (lifecycle): model loaded, not subscribed to {h.image_topic}"


def test_transitions_through_the_lifecycle_services(ros, random_model, tmp_path, val_frames):
    proc, h = lifecycle_node({"model": str(random_model), "threads": 1, "qos": "reliable"}, tmp_path,
                             "lc_transitions", "test_lifecycle_client")
    try:
        lc = LifecycleClient(h)
        img = val_frames[0][0]
        # the camera's CameraInfo is followed while active, as the camera is
        info_pub = h.node.create_publisher(CameraInfo, camera_info_topic(h.image_topic), 1)

        def info_followed(want: bool) -> None:
            h.wait_for(lambda: (info_pub.get_subscription_count() > 0) == want, 15, f"camera_info subscribed {want}")
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert h.pub_raw.get_subscription_count() == 0 and "configured:" not in proc.output()

        assert lc.transition(Transition.TRANSITION_CONFIGURE), proc.output()
        assert lc.state() == State.PRIMARY_STATE_INACTIVE
        assert proc.output().count("configured: ") == 1  # the model is loaded now
        # Configure makes the outputs; only once they are discovered does "no camera subscription
        # yet" say something (before, discovery alone would make the count 0).
        h.wait_for(lambda: h.node.count_publishers(f"{h.out_ns}/segmentation/labels") > 0, 15, "the labels publisher")
        wait_subscribed(h, False, 1.0)
        assert not frame_served(h, img, 2.0)  # inactive: nothing served
        # inactive says so on /diagnostics (OK): silence there is a node that died
        h.wait_for(lambda: inactive_said(h), 10, "diagnostics of the inactive node")

        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert lc.state() == State.PRIMARY_STATE_ACTIVE
        wait_subscribed(h, True)
        info_followed(True)
        assert frame_served(h, img, 30)
        h.wait_for(lambda: not inactive_said(h), 10, "diagnostics of the active node")

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.state() == State.PRIMARY_STATE_INACTIVE
        wait_subscribed(h, False)
        info_followed(False)
        h.wait_for(lambda: inactive_said(h) and h.diagnostics[-1]["frames_processed"] == "1", 10,
                   "diagnostics of the deactivated node")
        assert not frame_served(h, img, 1.0)
        # a transition the state does not have, by id (a client's mistake): refused, and the node
        # lives on (rclpy's service raised, which ended the node)
        assert not lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.state() == State.PRIMARY_STATE_INACTIVE
        assert "transition 4 requested, but state 'inactive' has none by that id (available: 2 cleanup, " \
            "3 activate, 6 shutdown): refused" in proc.output(), proc.output()

        assert lc.transition(Transition.TRANSITION_ACTIVATE)  # again, without reloading the model
        wait_subscribed(h, True)
        info_followed(True)
        assert frame_served(h, img, 30)
        assert not lc.transition(Transition.TRANSITION_ACTIVATE) and lc.state() == State.PRIMARY_STATE_ACTIVE
        assert frame_served(h, img, 30)
        assert proc.output().count("configured: ") == 1

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.transition(Transition.TRANSITION_CLEANUP)
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "cleaned up: model unloaded" in proc.output()
        h.wait_for(lambda: h.node.count_publishers(f"{h.out_ns}/segmentation/labels") == 0, 15, "the outputs removed")
        assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.transition(Transition.TRANSITION_ACTIVATE)
        wait_subscribed(h, True)
        assert frame_served(h, img, 30)  # a second configure loads and serves again

        assert lc.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert lc.state() == State.PRIMARY_STATE_FINALIZED
        wait_subscribed(h, False)
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()
    assert "Traceback" not in proc.output()


def test_a_bad_parameter_fails_configure_and_the_node_stays_up(ros, random_model, tmp_path):
    proc, h = lifecycle_node({"model": "no_such_model"}, tmp_path, "lc_bad", "test_lifecycle_bad")
    try:
        lc = LifecycleClient(h)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
        lines = [ln for ln in proc.output().splitlines() if "cannot configure" in ln]
        assert len(lines) == 1 and "unknown model 'no_such_model'" in lines[0]
        assert proc.proc.poll() is None
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_a_model_that_fails_its_warmup_fails_configure_and_a_fixed_one_serves(ros, random_model, tmp_path,
                                                                               val_frames):
    """configure with an ONNX file that loads but cannot run: one 'cannot configure' line, the
    node stays unconfigured with nothing published; with the parameter fixed it configures and
    serves, and deactivate / cleanup / shutdown leave it cleanly."""
    from conftest import onnx_that_fails_to_run
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    bad = onnx_that_fails_to_run(tmp_path / "fails.onnx")
    proc, h = lifecycle_node({"model": str(random_model), "threads": 1, "onnx": str(bad)}, tmp_path,
                             "lc_warmup", "test_lifecycle_warmup")
    try:
        lc = LifecycleClient(h)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
        lines = [ln for ln in proc.output().splitlines() if "cannot configure" in ln]
        assert len(lines) == 1 and "fails on a test frame" in lines[0], proc.output()
        assert h.node.count_publishers(f"{h.out_ns}/segmentation/labels") == 0
        setp = h.node.create_client(SetParameters, f"{h.out_ns}/segmentation_node/set_parameters")
        assert setp.wait_for_service(timeout_sec=30)
        bad = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0)  # unconfigured: checked too
        res = lc._call(setp, SetParameters.Request(parameters=[Parameter(name="max_rate", value=bad)])).results[0]
        assert not res.successful and "max_rate must be 0 (every frame) or 0.01 to 1000" in res.reason, res.reason
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="")
        assert lc._call(setp, SetParameters.Request(parameters=[Parameter(name="onnx", value=value)])).results[0].successful
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        res = lc._call(setp, SetParameters.Request(parameters=[Parameter(name="onnx", value=value)])).results[0]
        # the way to apply it from where the node is (inactive: no deactivate, which it would refuse)
        assert not res.successful and res.reason == "onnx: read at configure; clean up the node (it is " \
            "inactive), set it, then configure", res.reason
        rate = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=5.0)  # a live one: taken now
        assert lc._call(setp, SetParameters.Request(parameters=[Parameter(name="max_rate", value=rate)])).results[0].successful
        h.wait_for(lambda: "taken while running: max_rate 5 (was 0" in proc.output(), 10, "the change taken")
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        h.wait_for(lambda: "at most 5 frames a second" in proc.output(), 10, "the activation with it")
        wait_subscribed(h, True)
        res = lc._call(setp, SetParameters.Request(parameters=[Parameter(name="onnx", value=value)])).results[0]
        assert not res.successful and res.reason.startswith("onnx: read at configure; deactivate and clean up")
        assert frame_served(h, val_frames[0][0], 30)
        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.transition(Transition.TRANSITION_CLEANUP)
        assert lc.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()
    assert "Traceback" not in proc.output()


def test_a_failed_configure_leaves_no_publishers_behind(ros, random_model, tmp_path):
    """configure fails on a ground pose of the wrong length (before any model loads); fixed by a
    parameter call, the second configure succeeds: one publisher per output, as on a first try."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    proc, h = lifecycle_node({"model": str(random_model), "threads": 1, "ground.enable": True,
                              "ground.camera_xyz": "[0.25, 0.9]"}, tmp_path, "lc_leak", "test_lifecycle_leak")
    try:
        lc = LifecycleClient(h)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        lines = [ln for ln in proc.output().splitlines() if "cannot configure" in ln]
        assert len(lines) == 1 and "ground.camera_xyz" in lines[0], proc.output()
        assert "segmenting" not in proc.output() and "loaded" not in proc.output()
        assert h.node.count_publishers(f"{h.out_ns}/segmentation/labels") == 0
        setp = h.node.create_client(SetParameters, f"{h.out_ns}/segmentation_node/set_parameters")
        assert setp.wait_for_service(timeout_sec=30)
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[0.25, 0.0, 0.9])
        res = lc._call(setp, SetParameters.Request(parameters=[Parameter(name="ground.camera_xyz", value=value)]))
        assert res.results[0].successful, res
        # deleting a (dynamically typed) parameter while unconfigured: refused, else undeclared for
        # good and every configure after it failing
        for name in ("max_rate", "ground.max_range"):
            gone = Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_NOT_SET))
            res = lc._call(setp, SetParameters.Request(parameters=[gone])).results[0]
            assert not res.successful and res.reason.startswith(f"{name}: cannot be deleted"), res
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        def mine(topic):
            return [i for i in h.node.get_publishers_info_by_topic(topic)
                    if (i.node_namespace, i.node_name) == (h.out_ns, "segmentation_node")]
        h.wait_for(lambda: len(mine(f"{h.out_ns}/segmentation/labels")) == 1, 10, "the labels publisher, discovered")
        time.sleep(0.5)  # a second one would be discovered by now too
        for topic in (f"{h.out_ns}/segmentation/labels", f"{h.out_ns}/segmentation/label_info", "/diagnostics"):
            assert len(mine(topic)) <= 1, (topic, len(mine(topic)))
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_frames_sent_while_inactive_are_not_counted_lost_upstream(ros, random_model, tmp_path, val_frames):
    """A lifecycle manager pausing the node for under a second: the camera's frames of that spell
    never reached an inactive node, yet the stamp gap across it was counted as frames lost upstream
    (WARN 'camera frames never arrived' for 10 s, the count raised for good)."""
    proc, h = lifecycle_node({"model": str(random_model), "threads": 1, "qos": "reliable"}, tmp_path,
                             "lc_gaps", "test_lifecycle_gaps_client")
    img = val_frames[0][0][:96, :128].copy()
    period_ns = 33_333_333  # a 30 Hz camera
    t0 = 1_800_000_000 * 10**9

    def send(k):  # the camera's k-th frame, stamped as a 30 Hz camera stamps it
        t = t0 + k * period_ns
        h.pub_raw.publish(raw_image(img, "rgb8", (t // 10**9, t % 10**9, "camera")))
        time.sleep(0.1)
    try:
        lc = LifecycleClient(h)
        assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.transition(Transition.TRANSITION_ACTIVATE)
        wait_subscribed(h, True)
        for k in range(8):
            send(k)
        assert lc.transition(Transition.TRANSITION_DEACTIVATE) and lc.transition(Transition.TRANSITION_ACTIVATE)
        wait_subscribed(h, True)
        for k in range(26, 34):  # frames 8-25 (0.6 s) went out while the node was inactive
            send(k)
        d = h.settled_diag()
        assert int(d["frames_received"]) >= 12 and d["frames_missing_upstream"] == "0", d
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


class ManagerBond:
    """The lifecycle manager's side of a bond, by bondcpp's rules (bond.cpp bondStatusCB and its
    heartbeat timer): a Status with the bond's id from another instance formed it; `active` false,
    or no heartbeat for the timeout, broke it."""

    def __init__(self, h: Harness, bond_id: str, timeout_s: float = 4.0, topic: str = "/bond"):
        from bond.msg import Status
        from rclpy.qos import QoSProfile
        self.id, self.timeout_s = bond_id, timeout_s
        self.got = []  # (perf_counter, instance_id, active)
        h.node.create_subscription(Status, topic, self._on_status, QoSProfile(depth=100))

    def _on_status(self, msg) -> None:
        if msg.id == self.id:
            self.got.append((time.perf_counter(), msg.instance_id, msg.active))
            self.fields = (msg.heartbeat_period, msg.heartbeat_timeout)

    def formed_since(self, t0: float) -> bool:
        return any(t >= t0 and active for t, _, active in self.got)

    def broken(self, instance: str) -> bool:
        beats = [(t, active) for t, i, active in self.got if i == instance]
        return bool(beats) and (not beats[-1][1] or time.perf_counter() - beats[-1][0] > self.timeout_s)


def test_the_managed_node_keeps_a_bond_while_active(ros, random_model, tmp_path):
    """Nav2's lifecycle manager (bond_timeout 4 s by default) waits after activate for the node's
    heartbeat and watches it: none came (the node needed bond_timeout: 0.0, and a dead node went
    unnoticed). Now: heartbeats at bond_heartbeat_period from activate, goodbye on deactivate, a new
    instance per activation, and a bond that breaks when the node dies."""
    import signal
    proc, h = lifecycle_node({"model": str(random_model), "threads": 1}, tmp_path, "lc_bond",
                             "test_lifecycle_bond_client")
    try:
        watcher = ManagerBond(h, "segmentation_node", topic="/lc_bond/bond")  # there all along: nothing before activate
        lc = LifecycleClient(h)
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        time.sleep(0.5)
        assert not watcher.got, "a bond before activate"
        for _ in range(2):
            assert lc.transition(Transition.TRANSITION_ACTIVATE)
            # as the manager does: its bond (a new subscription) after activate returned, then it waits
            # up to half its bond_timeout for the bond to form
            t0 = time.perf_counter()
            manager = ManagerBond(h, "segmentation_node", topic="/lc_bond/bond")
            h.wait_for(lambda: manager.formed_since(t0), 2.0, "the first heartbeat")
            assert manager.fields == (pytest.approx(0.1), pytest.approx(4.0))
            instance = manager.got[0][1]
            time.sleep(3.0)  # past the 2 s within which the bond formed: heartbeats go on
            beats = [t for t, i, a in manager.got if i == instance and a]
            # ~10 Hz; a gap under a second is far inside Nav2's 4 s bond_timeout (a loaded CPU stalls a beat)
            assert beats[-1] > t0 + 2.8 and max(b - a for a, b in zip(beats, beats[1:])) < 1.0, beats
            assert not manager.broken(instance)
            assert lc.transition(Transition.TRANSITION_DEACTIVATE)
            h.wait_for(lambda: manager.broken(instance), 2.0, "the goodbye")
            n = len(watcher.got)
            time.sleep(0.5)
            assert len(watcher.got) == n, "heartbeats while inactive"
        assert len({i for _, i, _ in watcher.got}) == 2  # a new instance per activation
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        t0 = time.perf_counter()
        manager = ManagerBond(h, "segmentation_node", topic="/lc_bond/bond")
        h.wait_for(lambda: manager.formed_since(t0), 2.0, "the first heartbeat")
        instance = manager.got[-1][1]
        proc.proc.send_signal(signal.SIGKILL)  # dies without a word: the heartbeats stop
        manager.timeout_s = 1.0  # (a short bond_timeout, not to wait 4 s here)
        h.wait_for(lambda: manager.broken(instance), 3.0, "the bond to break")
    finally:
        h.close()
        proc.stop()


def test_bond_and_diagnostics_keep_wall_time_under_sim_time(ros, random_model, tmp_path):
    """Under use_sim_time with no /clock yet (a simulator starting paused, a bag not yet played), the
    heartbeats ran on the node's clock: one beat, then none, and Nav2's manager aborted the bringup
    ("unable to be reached by bond"); /diagnostics stayed silent too. bondcpp's heartbeat timer runs
    on wall time; so do both of the node's."""
    proc, h = lifecycle_node({"model": str(random_model), "threads": 1, "use_sim_time": True}, tmp_path,
                             "lc_simtime", "test_lifecycle_simtime_client")
    try:
        lc = LifecycleClient(h)
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        h.wait_for(lambda: len(h.diagnostics) >= 2, 5.0, "diagnostics without a /clock")
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        t0 = time.perf_counter()
        manager = ManagerBond(h, "segmentation_node", topic="/lc_simtime/bond")
        h.wait_for(lambda: manager.formed_since(t0), 2.0, "the first heartbeat")
        time.sleep(1.5)
        beats = [t for t, _, a in manager.got if a]
        assert len(beats) >= 5 and beats[-1] > t0 + 1.0, beats  # ~10 Hz
        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_without_the_bond_messages_the_node_says_so_and_keeps_none(monkeypatch, tmp_path):
    """On a system without the ROS bond package there is no bond: a warning at each activation says
    what the manager then needs; a period of 0 turns the bond off without a word. nav2.launch.py's
    manager expects no bond then (a manager waiting for a heartbeat that never comes aborts the
    bringup): bond_timeout 0, with a note where the messages are missing."""
    from types import SimpleNamespace
    from seg_perception.ros import bond
    said = []
    node = SimpleNamespace(get_logger=lambda: SimpleNamespace(warning=said.append))
    assert bond.start_bond(node, 0.0) is None and not said
    monkeypatch.setattr(bond, "Status", None)
    assert bond.start_bond(node, 0.1) is None
    assert said == [bond.MISSING] and "bond_timeout: 0.0" in said[0]
    from seg_perception.ros.launch_arguments import manager_bond_timeout
    on, off = tmp_path / "on.yaml", tmp_path / "off.yaml"
    on.write_text("/**:\n  ros__parameters:\n    model: rdsnet_camvid\n")
    off.write_text("/**:\n  ros__parameters:\n    bond_heartbeat_period: 0.0\n")
    assert manager_bond_timeout(str(on), True) == (4.0, "")
    assert manager_bond_timeout(str(off), True) == (0.0, "")
    timeout, note = manager_bond_timeout(str(on), False)
    assert timeout == 0.0 and "bond messages are not installed" in note
    assert manager_bond_timeout(str(REPO / "config" / "nav2.yaml"), True) == (4.0, "")


def test_a_failing_transition_is_logged_and_leaves_nothing_serving(monkeypatch, random_model):
    """rclpy turns an exception in on_deactivate into an error without a word and runs on_error,
    which repeated the failing step: the node ended finalized, still subscribed to the camera with
    its model loaded and its ground outputs up, and a manager could only say "failed to change
    state". Now the reason is logged and on_error takes down every part it can, each on its own."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from seg_perception.ros.lifecycle import ManagedSegmentationNode

    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "-p", f"model:={random_model}", "-p", "threads:=1",
                     "-p", "image_topic:=/lc_failing/image_raw", "-p", "bond_heartbeat_period:=0.0",
                     "-p", "ground.enable:=true"], context=ctx)
    node = None
    try:
        node = ManagedSegmentationNode("seg_failing", context=ctx)
        said = []
        logger = node.get_logger()
        monkeypatch.setattr(node, "get_logger", lambda: type("L", (), {
            "error": lambda self, m, **k: said.append(m), "info": lambda self, m, **k: logger.info(m),
            "warning": lambda self, m, **k: logger.warning(m)})())
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.count_subscribers("/lc_failing/image_raw") == 1
        assert node.count_subscribers("/lc_failing/camera_info") == 1
        assert node.count_publishers("/segmentation/drivable_grid") == 1

        def broken():
            raise RuntimeError("a ground publisher would not go")
        monkeypatch.setattr(node, "_deactivate", broken)
        node.trigger_deactivate()
        assert said[0] == "cannot deactivate: RuntimeError: a ground publisher would not go", said
        assert node.count_subscribers("/lc_failing/image_raw") == 0  # nothing served any more
        assert node.pipeline is None and node.diag_timer is None  # model unloaded, outputs removed
        # the ground outputs too: a latched grid left up reached a costmap that joined later
        assert node.count_publishers("/segmentation/drivable_grid") == 0
        assert node.count_subscribers("/lc_failing/camera_info") == 0
        assert node._state_machine.current_state[1] == "finalized"  # (a part could not be released)
        monkeypatch.undo()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)
