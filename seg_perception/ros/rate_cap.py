"""The node's `max_rate`: at most so many frames a second segmented per camera.

A robot often needs labels at 5-15 Hz from a camera that runs at 30: segmenting every frame
spends the CPU or GPU (and, on a Jetson, the watts) on frames nobody needs. The cap lets a
frame through when its turn is due, by arrival time, and skips the rest before they cost
anything but the message.
"""
from __future__ import annotations

from collections import deque
from typing import Optional


class RateCap:
    """Admits at most ``hz`` frames a second (0: every frame).

    The due times advance by whole periods, so the average stays at ``hz`` when the camera's
    own period is not a divisor of the cap's; after a pause (nothing admitted for a period)
    the next frame starts a new schedule, so a camera that comes back is not served in a burst.

    A frame a little before its turn takes it: up to half a camera period early (the camera's
    period from the recent arrival gaps), so that jitter does not push a turn to the next frame
    (every fourth frame instead of every third), and no more, or the frame before the due one
    would take the turn whenever it came late (from 30 Hz at 15: pairs of frames, then a gap)."""

    GAPS = 15  # arrival gaps the camera's period is the median of

    def __init__(self, hz: float):
        self.period = 1.0 / hz if hz > 0 else 0.0
        self.due: Optional[float] = None
        self.last: Optional[float] = None  # the latest arrival
        self.gaps: deque = deque(maxlen=self.GAPS)

    def camera_period(self) -> float:
        """Seconds between arrivals (the median of the recent gaps), 0 until a few are known."""
        if len(self.gaps) < 3:
            return 0.0
        return sorted(self.gaps)[len(self.gaps) // 2]

    def admit(self, now: float) -> bool:
        if not self.period:
            return True
        if self.last is not None and now > self.last:
            self.gaps.append(now - self.last)
        self.last = now
        camera = self.camera_period()
        # (the camera's period not known yet, its first few frames: a tenth of the cap's, jitter only)
        early = 0.5 * min(self.period, camera) if camera else 0.1 * self.period
        if self.due is not None and now < self.due - early:
            return False
        late = self.due is None or now - self.due >= self.period
        self.due = now + self.period if late else self.due + self.period
        return True

    def restart(self) -> None:
        """A new activation: the first frame is admitted at once, the camera's period learnt anew."""
        self.due = self.last = None
        self.gaps.clear()
