"""The node's `max_rate`: at most so many frames a second segmented per camera.

A robot often needs labels at 5-10 Hz from a camera that runs at 30: segmenting every frame
spends the CPU or GPU (and, on a Jetson, the watts) on frames nobody needs. The cap lets a
frame through when its turn is due, by arrival time, and skips the rest before they cost
anything but the message.
"""
from __future__ import annotations

from typing import Optional

# A frame that arrives up to this share of a period before its turn takes it: a 30 Hz camera capped
# at 10 Hz gets every third frame, not every fourth whenever the third came a little early, and a
# camera whose frames arrive unevenly (large frames lost on the way) is not passed over for a later
# frame that may never come. The average stays at the cap: each turn is a period after the last one's.
EARLY = 0.5


class RateCap:
    """Admits at most ``hz`` frames a second (0: every frame).

    The due times advance by whole periods, so the average stays at ``hz`` when the camera's
    own period is not a divisor of the cap's; after a pause (nothing admitted for a period)
    the next frame starts a new schedule, so a camera that comes back is not served in a burst."""

    def __init__(self, hz: float):
        self.period = 1.0 / hz if hz > 0 else 0.0
        self.due: Optional[float] = None

    def admit(self, now: float) -> bool:
        if not self.period:
            return True
        if self.due is not None and now < self.due - EARLY * self.period:
            return False
        late = self.due is None or now - self.due >= self.period
        self.due = now + self.period if late else self.due + self.period
        return True

    def restart(self) -> None:
        """A new activation: the first frame is admitted at once."""
        self.due = None
