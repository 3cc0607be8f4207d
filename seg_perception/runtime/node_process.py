"""segmentation_node as a child process, started the way a robot starts it: the
console script with config/jetson.yaml and parameter overrides.

Live bag evaluation, bench-node and the tests all start the node through this one
class. It runs an executable and imports no ROS library, so it sits in runtime
where every area (and the tests) can use it.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

try:
    import fcntl
except ImportError:  # not POSIX: domains are drawn at random, unheld
    fcntl = None

from ..paths import PACKAGE, default_params_file


def node_executable(program: str = "segmentation_node") -> str:
    """A console script of this package (segmentation_node, segmentation_lifecycle_node): beside
    this interpreter (a venv), beside the running script, in a colcon install's lib/seg_perception
    (not on PATH: `ros2 run` finds it there, and so must the commands that start the node), on PATH."""
    places = [Path(sys.executable).parent, Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None]
    try:
        from ament_index_python.packages import get_package_prefix
        places.append(Path(get_package_prefix(PACKAGE)) / "lib" / PACKAGE)
    except Exception:  # no ament index, or the package is not in it
        pass
    for place in places:
        if place is not None and (place / program).is_file():
            return str(place / program)
    found = shutil.which(program)
    if not found:
        raise FileNotFoundError(f"{program} is not installed: run 'make setup' (or 'pip install -e .'), "
                                "or source the ROS 2 workspace that has seg_perception")
    return found


class NodeProcess:
    """Starts the node at once; ``stop`` ends it with SIGINT, as ``ros2 launch`` does."""

    def __init__(self, params: Dict[str, object], log_path: Path, env: Optional[Dict[str, str]] = None,
                 params_file: Optional[Path] = None, program: str = "segmentation_node",
                 ros_args: Sequence[str] = ()):
        self.args = [node_executable(program), "--ros-args", *ros_args]  # ros_args: e.g. -r __node:=name
        pf = params_file or default_params_file()
        if pf is not None:
            self.args += ["--params-file", str(pf)]
        for k, v in params.items():
            v = str(v).lower() if isinstance(v, bool) else v
            self.args += ["-p", f"{k}:={v}"]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        env = dict(os.environ) if env is None else env
        # a node on this process's private domain holds its lock too: a run killed with SIGKILL leaves its
        # node's domain held until the node ends, not free for another run beside the orphan
        held = [_PRIVATE_HELD[1]] if _PRIVATE_HELD and env.get("ROS_DOMAIN_ID") == str(_PRIVATE_HELD[0]) else []
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, pass_fds=held)

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def failure(self) -> str:
        """The node's own one-line reason for stopping, else the last line of its log."""
        lines = [ln.strip() for ln in self.output().splitlines() if ln.strip()]
        why = next((ln for ln in lines if "cannot start" in ln), None) or (lines[-1] if lines else "no output")
        return why[:400]

    def stop(self) -> Optional[int]:
        """SIGINT, then SIGKILL after 15 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the node shuts down cleanly
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode


# Benches and live evaluation start their node and camera on a domain of their own, drawn from
# here: apart from 0-101, where users and test sessions sit, so that another node serving
# /camera/image_raw cannot answer a bench's frames (Fast DDS takes ids up to 232).
PRIVATE_DOMAINS = range(102, 202)


_PRIVATE_HELD: Optional[Tuple[int, int]] = None  # (domain, lock file descriptor) of this process's private run


class DomainInUse(RuntimeError):
    """The domain asked for is held by another run on this machine; the message says what to do."""


def private_domain(requested: Optional[int] = None) -> int:
    """A domain for a private run, never this process's own ROS_DOMAIN_ID, and none that another
    process's private run holds (two benches or evaluations at once drew the same one 1 time in
    100, and each then answered the other's frames). ``requested`` (a user's --domain-id): that
    one, held the same way, or DomainInUse while another run holds it. A process runs one private
    run at a time: the domain it held before is given up."""
    global _PRIVATE_HELD
    before = _PRIVATE_HELD
    if requested is not None:
        requested = int(requested)
        if before is not None and before[0] == requested:
            return requested  # this process holds it already (a node it started may share the hold)
        choices = [requested]
        held, busy = None, False
        for _ in range(5):  # (a holder may end, or another process look, between a try and a look)
            held = hold_domain(choices)
            if held is not None:
                break
            busy = domain_held(requested)
            time.sleep(0.05)
        if held is None and busy:  # held by another run at the last look; the earlier hold, if any, stays
            raise DomainInUse(f"ROS domain {requested} is held by a seg-perception run on this machine (a "
                              "bench, a live evaluation or a test session; their frames would mix): leave "
                              "out --domain-id for a free private one, or choose another")
    else:
        own = os.environ.get("ROS_DOMAIN_ID", "")
        choices = [d for d in PRIVATE_DOMAINS if str(d) != own]
        random.SystemRandom().shuffle(choices)
        held = hold_domain(choices)  # the earlier one still held here: never drawn again at once
    if before is not None:
        os.close(before[1])
        _PRIVATE_HELD = None
    if held is None:  # every one held (or no locks here): as before, at random
        return choices[0]
    _PRIVATE_HELD = held
    return held[0]


def hold_domain(candidates: Sequence[int]) -> Optional[Tuple[int, int]]:
    """The first of ``candidates`` no other holder has, held until the returned descriptor is
    closed or the process ends (an flock on a file in the temporary folder, which dies with its
    process, SIGKILL included; opened read-only, so another user's file serves as well): (domain,
    descriptor), or None when all are held. A NodeProcess started on the private domain shares the
    hold (the descriptor passed on), so the domain stays held while its node runs."""
    if fcntl is None:
        return None
    for d in candidates:
        path = Path(tempfile.gettempdir()) / f"seg_perception_ros_domain_{d}.lock"
        try:  # an existing file opened without O_CREAT: allowed on another user's in /tmp (fs.protected_regular)
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError:
                continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return d, fd
    return None


def domain_held(domain: int) -> bool:
    """Whether another process holds ``domain`` now (False where locks cannot be taken at all)."""
    if fcntl is None:
        return False
    path = Path(tempfile.gettempdir()) / f"seg_perception_ros_domain_{domain}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no such file: nobody holds it (or unreadable: cannot tell, as without locks)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def local_discovery() -> Dict[str, str]:
    """The variables that keep discovery on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE and
    ROS_STATIC_PEERS since Iron; Humble's rcl reads only ROS_LOCALHOST_ONLY (which Jazzy warns is
    deprecated, so it is set only where ROS_DISTRO says humble)."""
    if os.environ.get("ROS_DISTRO") == "humble":
        return {"ROS_LOCALHOST_ONLY": "1"}
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_STATIC_PEERS": "127.0.0.1"}


def ros_env(domain_id: int, set_discovery: bool = True) -> Dict[str, str]:
    """The environment for a private run: our domain, and discovery limited to this machine
    unless the user chose otherwise (two processes here only find each other that way)."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    if set_discovery:
        for k, v in local_discovery().items():
            env.setdefault(k, v)
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def discover_as(env: Dict[str, str]) -> None:
    """This process's own participant discovers as the node started with ``env`` does (the
    variables are read when a participant is created, so before this process's first one)."""
    for k in local_discovery():
        if k in env:
            os.environ.setdefault(k, env[k])
