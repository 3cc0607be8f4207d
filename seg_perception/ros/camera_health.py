"""A camera's health, judged without ROS calls (the node reports it in /diagnostics): frames lost
before the node from gaps in the header stamps, the rate served, an overloaded node, and each
camera's status level and message. Pure functions and one small class, unit-tested on numbers."""
from __future__ import annotations

import re
import time
from collections import deque
from typing import Optional, Tuple

from diagnostic_msgs.msg import DiagnosticStatus


def rejection_kind(reason: str) -> str:
    """What the log throttles by: the reason up to its first colon, its numbers (sizes, byte counts,
    which vary from frame to frame) made alike; quoted names (an encoding, a format) tell kinds apart."""
    return re.sub(r"'[^']*'|\d+", lambda m: m[0] if m[0][0] == "'" else "#", reason.split(":")[0])[:60]


class StampGaps:
    """Frames lost before the node, from gaps in the camera's header stamps.

    What was published upstream is unknowable here, but a camera stamps frames at a steady
    period: a gap of k periods between consecutive stamps means k - 1 frames never arrived.
    The period is taken from the short gaps (loss only makes gaps longer: with more than half
    the frames lost the median gap is the loss, not the camera), a gap of up to 1.75 periods is
    jitter, and a gap over PAUSE_S (and 10 periods) is the camera stopping or the node being
    inactive, not loss. Losses are kept with their time, so that diagnostics can say whether
    frames are being lost now, not only whether they ever were."""

    PAUSE_S = 1.0
    RECENT_S = 10.0
    # this many long gaps in a row, all alike, are a camera that slowed down (a USB camera's auto
    # exposure halving its rate in the dark), not loss: real loss comes in uneven gaps
    RATE_CHANGE_RUN = 8

    def __init__(self, history: int = 61):
        self.last: Optional[int] = None
        self.deltas: deque = deque(maxlen=history)
        self.missing = 0
        self.pauses = 0
        self.rate_changes = 0
        self.rate_change: Optional[Tuple[float, float]] = None  # the latest, (period before, after) in ms
        self.losses: deque = deque(maxlen=1000)  # (monotonic time, frames) of each gap
        self._long_run: deque = deque(maxlen=self.RATE_CHANGE_RUN)  # the latest long gaps, if consecutive

    @property
    def period(self) -> float:
        """Seconds between frames, 0 until known: the median of the gaps near the shortest ones
        (the 20th percentile), i.e. of the gaps between frames that both arrived."""
        if len(self.deltas) < 5:
            return 0.0
        d = sorted(self.deltas)
        low = d[len(d) // 5]
        single = [x for x in d if x <= 1.5 * low]
        return single[len(single) // 2] / 1e9

    def add(self, sec: int, nanosec: int, now: Optional[float] = None) -> None:
        t = int(sec) * 1_000_000_000 + int(nanosec)
        if self.last is not None and t > self.last:
            d = t - self.last
            p = self.period * 1e9
            if p > 0 and d > max(self.PAUSE_S * 1e9, 10 * p):
                self.pauses += 1  # stopped and started again: nothing to learn about the period
                self._long_run.clear()
            else:
                self.deltas.append(d)
                if p > 0 and d > 1.75 * p:
                    lost = int(round(d / p)) - 1
                    self.missing += lost
                    self.losses.append((time.monotonic() if now is None else now, lost))
                    self._long_run.append(d)
                    run = self._long_run
                    if len(run) == self.RATE_CHANGE_RUN and max(run) <= 1.15 * min(run):
                        # taken as the camera's new period, learnt from these gaps; stamps cannot tell it
                        # from a loss of every k-th frame, so the change is said (log, diagnostics)
                        for _ in run:
                            self.missing -= self.losses.pop()[1]
                        self.deltas.clear()
                        self.deltas.extend(run)
                        run.clear()
                        self.rate_changes += 1
                        self.rate_change = (p / 1e6, self.period * 1e3)  # ms before, after
                else:
                    self._long_run.clear()
        if self.last is None or t > self.last:
            self.last = t
        elif t < self.last - self.PAUSE_S * 1e9:  # the clock went back (bag loop, sim reset): start over
            self.last = t
            self.pauses += 1

    def recent(self, now: Optional[float] = None) -> int:
        """Frames that never arrived within the last RECENT_S seconds."""
        now = time.monotonic() if now is None else now
        return sum(n for t, n in self.losses if now - t <= self.RECENT_S)


def overload_note(camera_hz: float, served_fps: float, processing_ms: float, newly_dropped: int,
                  size: tuple, cameras: int = 1, max_rate: float = 0.0) -> str:
    """What to tell a user whose camera (or max_rate, where lower) is faster than the node ("" when
    it is not). The node works as designed then (newest frame wins), but frames are skipped and each
    one waits for the frame in progress, so say why and which knobs serve more."""
    capped = 0 < max_rate < camera_hz
    wanted = max_rate if capped else camera_hz
    if wanted <= 0 or served_fps <= 0 or newly_dropped <= 0 or served_fps >= 0.9 * wanted:
        return ""
    w, h = size
    shared = f", the node's time shared by {cameras} cameras" if cameras > 1 else ""
    asked = f"max_rate {max_rate:g} (camera at {camera_hz:.1f} Hz)" if capped else f"camera at {camera_hz:.1f} Hz"
    return (f"{asked} is faster than the node ({served_fps:.1f} FPS, {processing_ms:.0f} ms "
            f"per frame at {w}x{h}{shared}): newer frames replace waiting ones; to serve more, lower "
            "input_width/input_height, add workers, or use TensorRT" + (" (or lower max_rate)" if capped else ""))


REJECTED_RUN_WARN = 3  # frames rejected in a row that make a camera's status WARN
# No frame at all this long after the node began serving: WARN (a wrong topic or remap is not "ok").
NO_FRAMES_WARN_S = 10.0
# Frames arriving but none finished (served or rejected) for max(this, 10 processing times): ERROR.
STUCK_MIN_S = 10.0


def served_fps(done_times, now: float, since_first_s: float, window_s: float = 5.0) -> float:
    """Frames finished in the last ``window_s`` over the time up to ``now`` (not between the first and
    the last of them: a camera that stopped must fall to 0, not keep its last rate), or since the first
    frame arrived where that is shorter (a camera that just began is not averaged with the wait before)."""
    recent = sum(1 for t in done_times if now - t <= window_s)
    return recent / max(1.0, min(window_s, since_first_s))


def camera_health(*, shown: str, received: int, processed: int, rejected_in_a_row: int, last_rejection: str,
                  incompatible_qos: str, serving_s: float, silent_s: Optional[float], period_s: float,
                  idle_s: float, processing_s: float, missing_now: int, missing: int,
                  cap_period_s: float = 0.0) -> Tuple[int, str]:
    """(DiagnosticStatus level, message) of one camera. ``serving_s``: seconds since the node began
    serving; ``silent_s``: since the newest frame (None before the first); ``idle_s``: since the
    last frame finished (served or rejected), or since the first frame when none has;
    ``cap_period_s``: 1 / max_rate (frames between its turns are skipped, not stuck)."""
    ok, warn, error = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
    if not received:
        if incompatible_qos:
            return warn, incompatible_qos
        if serving_s >= NO_FRAMES_WARN_S:
            return warn, f"no frames on {shown} in {serving_s:.0f} s: is the topic (or its remap) right?"
        return ok, f"waiting for frames on {shown}"
    stopped = silent_s is not None and silent_s > max(2.0, 3 * period_s)
    # a failure inside the node first: a stopped camera must not hide it
    if rejected_in_a_row >= REJECTED_RUN_WARN and last_rejection.startswith("processing failed"):
        return error, f"the last {rejected_in_a_row} frames failed in the node: {last_rejection}"
    if not stopped and idle_s > max(STUCK_MIN_S, 10 * processing_s, 3 * cap_period_s):
        return error, (f"no frame finished for {idle_s:.0f} s while frames arrive: the model is stuck or far "
                       "too slow")
    if stopped and incompatible_qos:  # a driver relaunched with a QoS that cannot match: the cause, not "stopped"
        return warn, incompatible_qos
    if stopped:
        return warn, f"no frames on {shown} for {silent_s:.0f} s: has the camera stopped?"
    if rejected_in_a_row >= REJECTED_RUN_WARN:
        # a camera that changed its encoding or size after frames were served: not "ok" any more
        # (a run, not one report's window: a slow model or a sparse camera would flap)
        return warn, f"the last {rejected_in_a_row} frames were all rejected (none processed since): {last_rejection}"
    if not processed:
        return warn, "frames received but none processed"
    if missing_now:
        return warn, (f"{missing_now} camera frames never arrived in the last {StampGaps.RECENT_S:.0f} s ({missing} "
                      "since start; gaps in header stamps): lost on the way (large frames between processes: "
                      "README 'DDS notes') or dropped by the camera")
    return ok, "ok"
