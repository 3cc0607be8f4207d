"""Ground projection: where the pixels of a calibrated camera lie on a flat ground plane.

ROS-free numpy/OpenCV. Frames (REP 103 / REP 105 conventions):
  base      x forward, y left, z up; the ground is the plane z = 0
  body      the camera body in base, set by xyz + roll/pitch/yaw (positive pitch looks down)
  optical   z forward along the lens axis, x right, y down (what CameraInfo's K describes)

Two products, each built once per calibration and pose and then applied to every frame
by indexing (no per-frame geometry):
  GridLookup   cell of a base-frame grid -> the pixel its ground point projects onto
               (forward projection, lens distortion applied), and every pixel (block, in
               masks wider than BIN_WIDTH) -> the cell its ground point falls in, for the
               drivable grid: a cell is lethal where its centre's pixel or any pixel
               landing in it is not drivable
  GroundCloud  pixel (at a stride) -> the ground point its ray hits (undistorted ray
               intersected with z = 0), for the organized point cloud

Ranges are ray lengths from the camera's optical centre, so "beyond max_range" means the
same thing for the grid and the cloud.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

# Distortion models of sensor_msgs/CameraInfo; plumb_bob and rational_polynomial share
# OpenCV's (k1, k2, p1, p2[, k3[, k4, k5, k6]]) layout, equidistant is OpenCV's fisheye.
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "none", "")

# Optical axes expressed in the body frame: optical x = -body y, y = -body z, z = body x.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                              [-1.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0]])

# Grid values, Nav2's OccupancyGrid convention.
FREE, LETHAL, UNKNOWN = 0, 100, -1


class GroundError(ValueError):
    """A calibration or parameter the projection cannot use; the message says which."""


def image_map(x0: float = 0, y0: float = 0, bx: int = 1, by: int = 1, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    """The 3x3 matrix A that takes a full-resolution pixel (u, v, 1) to the pixel of the image made
    from it by a window at (x0, y0), binning bx by by (image_geometry's convention), then a resize
    by sx, sy as cv2.resize does it (pixel centres to pixel centres: c' = (c + 0.5) s - 0.5;
    image_proc's resize scales by c s, half a pixel apart). The new image's intrinsics are A K
    and its projection matrix A P; distortion acts on normalised coordinates and stays."""
    window = np.array([[1.0 / bx, 0.0, -x0 / bx], [0.0, 1.0 / by, -y0 / by], [0.0, 0.0, 1.0]])
    resize = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return resize @ window


@dataclass(frozen=True)
class Camera:
    """Pinhole camera with lens distortion, as sensor_msgs/CameraInfo describes it."""
    width: int
    height: int
    K: np.ndarray                       # 3x3 intrinsics of the raw (distorted) image
    D: np.ndarray                       # distortion coefficients (model-dependent)
    model: str = "plumb_bob"

    @classmethod
    def from_camera_info(cls, width: int, height: int, k: Sequence[float], d: Sequence[float],
                         model: str) -> "Camera":
        K = np.asarray(k, np.float64).reshape(3, 3) if len(k) == 9 else None
        if K is None or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise GroundError("camera_info has no calibration (K is zero): calibrate the camera first")
        if abs(K[0, 1]) > 1e-9 * K[0, 0]:  # ROS calibrations write 0; undistortion would ignore it
            raise GroundError(f"camera_info K has a skew of {K[0, 1]:g}, which the ground projection does not "
                              "model: calibrate without skew (ROS's camera_calibration writes 0)")
        if width <= 0 or height <= 0:
            raise GroundError(f"camera_info size {width}x{height} is empty")
        model = str(model)
        if model not in DISTORTION_MODELS:
            raise GroundError(f"unsupported distortion model '{model}'; supported: "
                              f"{', '.join(m for m in DISTORTION_MODELS if m)}")
        D = np.asarray(d, np.float64).ravel()
        if model == "equidistant":
            D = np.pad(D, (0, max(0, 4 - D.size)))[:4]
        elif model in ("none", "") or not D.any():
            D, model = np.zeros(0), "none"
        elif D.size not in (4, 5, 8):
            raise GroundError(f"{model} distortion needs 4, 5 or 8 coefficients, got {D.size}")
        return cls(int(width), int(height), K, D, model)

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera seen through an image resized to width x height as cv2.resize does it
        (the pipeline's resize; image_map)."""
        if (width, height) == (self.width, self.height):
            return self
        K = image_map(sx=width / self.width, sy=height / self.height) @ self.K
        return Camera(int(width), int(height), K, self.D, self.model)

    def window(self, x0: int, y0: int, width: int, height: int, bx: int, by: int) -> "Camera":
        """The camera of the image a driver publishes from a region of interest of this (full)
        frame, binned bx by by: width x height full-resolution pixels from (x0, y0). Pixel (i, j) of
        it is full-resolution pixel (x0 + i bx, y0 + j by), as image_geometry (PinholeCameraModel's
        toFullResolution and binned K / P) and image_proc's rectification of a binned image take it.
        Distortion acts on normalised coordinates and stays."""
        if (x0, y0, width, height, bx, by) == (0, 0, self.width, self.height, 1, 1):
            return self
        return Camera(width // bx, height // by, image_map(x0, y0, bx, by) @ self.K, self.D, self.model)

    # ------------------------------------------------------------ projection
    def project(self, p_opt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(N, 3) optical-frame points (z > 0) -> (N, 2) pixel coordinates and a mask of
        points whose projection is trustworthy (inside the lens model's monotonic range)."""
        x = p_opt[:, 0] / p_opt[:, 2]
        y = p_opt[:, 1] / p_opt[:, 2]
        r2 = x * x + y * y
        if self.model == "equidistant":
            r = np.sqrt(r2)
            th = np.arctan(r)
            k1, k2, k3, k4 = self.D
            thd = th * (1 + th**2 * (k1 + th**2 * (k2 + th**2 * (k3 + th**2 * k4))))
            scale = np.where(r > 1e-12, thd / np.maximum(r, 1e-12), 1.0)
            xd, yd = x * scale, y * scale
            ok = th < self._monotonic_limit()
        elif self.model == "none":
            xd, yd, ok = x, y, np.ones_like(x, bool)
        else:
            k = np.zeros(8)
            k[: min(8, self.D.size)] = self.D[:8]
            k1, k2, p1, p2, k3, k4, k5, k6 = k
            radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
            xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            ok = np.sqrt(r2) < self._monotonic_limit()
        K = self.K
        u = K[0, 0] * xd + K[0, 1] * yd + K[0, 2]
        v = K[1, 1] * yd + K[1, 2]
        return np.stack([u, v], axis=1), ok

    def _monotonic_limit(self) -> float:
        """Largest undistorted radius (or angle, fisheye) up to which the distortion
        polynomial still grows: beyond it, far-off-axis points fold back into the image."""
        if self.model == "equidistant":
            t = np.linspace(0.0, np.pi / 2, 4000)
            k1, k2, k3, k4 = self.D
            f = t * (1 + t**2 * (k1 + t**2 * (k2 + t**2 * (k3 + t**2 * k4))))
        else:
            t = np.linspace(0.0, 20.0, 20000)
            k = np.zeros(8)
            k[: min(8, self.D.size)] = self.D[:8]
            r2 = t * t
            f = t * (1 + r2 * (k[0] + r2 * (k[1] + r2 * k[4]))) / (1 + r2 * (k[5] + r2 * (k[6] + r2 * k[7])))
        falling = np.nonzero(np.diff(f) <= 0)[0]
        return float(t[falling[0]]) if falling.size else float(t[-1])

    def rays(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates -> (N, 3) optical-frame ray directions (z = 1)."""
        pts = uv.reshape(-1, 1, 2).astype(np.float64)
        if self.model == "equidistant":
            return self._fisheye_rays(uv.reshape(-1, 2).astype(np.float64))
        elif self.model == "none":
            n = cv2.undistortPoints(pts, self.K, np.zeros(4))
        else:
            # The iterative solver converges far from the axis too, where the default 5 steps do not.
            n = undistort_points_iter(pts, self.K, self.D,
                                      (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10))
        n = n.reshape(-1, 2)
        return np.column_stack([n, np.ones(len(n))])


    def _fisheye_rays(self, uv: np.ndarray) -> np.ndarray:
        """Equidistant rays by inverting theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8) on its
        monotonic range (bisection): cv2.fisheye.undistortPoints clamps theta_d at pi/2, which a lens
        with k1 > 0 reaches well before 90 degrees, so the outer pixels of a wide lens got wrong rays
        (and then none). NaN past the monotonic range."""
        k1, k2, k3, k4 = self.D
        yd = (uv[:, 1] - self.K[1, 2]) / self.K[1, 1]
        xd = (uv[:, 0] - self.K[0, 2]) / self.K[0, 0]
        thd = np.hypot(xd, yd)

        def f(t):
            t2 = t * t
            return t * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        top = min(self._monotonic_limit(), np.pi / 2 - 1e-6)  # (z = 1 rays end short of 90 degrees)
        lo, hi = np.zeros_like(thd), np.full_like(thd, top)
        for _ in range(48):  # f rises on [0, top]: halve the bracket of each pixel's theta
            mid = 0.5 * (lo + hi)
            below = f(mid) < thd
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        th = 0.5 * (lo + hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(thd > 1e-12, np.tan(th) / thd, 1.0)
        scale[thd > f(top)] = np.nan
        return np.column_stack([xd * scale, yd * scale, np.ones(len(uv))])


def undistort_points_iter(pts: np.ndarray, K: np.ndarray, D: np.ndarray, criteria: tuple) -> np.ndarray:
    """cv2.undistortPoints with a stopping criterion: OpenCV 4 names it undistortPointsIter,
    OpenCV 5 gives undistortPoints the argument instead."""
    if hasattr(cv2, "undistortPointsIter"):
        return cv2.undistortPointsIter(pts, K, D, None, None, criteria)
    return cv2.undistortPoints(pts, K, D, None, None, None, criteria)


# ---------------------------------------------------------------- pose
def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """REP 103 fixed-axis roll, pitch, yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class CameraPose:
    """The optical frame in base: p_base = R @ p_optical + t."""
    R: np.ndarray
    t: np.ndarray

    @classmethod
    def from_body_xyz_rpy(cls, xyz: Sequence[float], rpy: Sequence[float]) -> "CameraPose":
        """Pose of the camera body (x forward, z up) in base; the optical rotation is added here."""
        if len(xyz) != 3 or len(rpy) != 3:
            raise GroundError(f"camera_xyz and camera_rpy need 3 numbers each, got {list(xyz)} and {list(rpy)}")
        return cls(rpy_matrix(*map(float, rpy)) @ BODY_FROM_OPTICAL, np.asarray(xyz, np.float64))

    @classmethod
    def from_optical_transform(cls, translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> "CameraPose":
        """From a base <- optical-frame transform (what tf2 returns for the image's frame_id)."""
        x, y, z, w = map(float, quaternion_xyzw)
        n = np.sqrt(x * x + y * y + z * z + w * w)
        if n < 1e-9:
            raise GroundError("camera transform has a zero quaternion")
        x, y, z, w = x / n, y / n, z / n, w / n
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        return cls(R, np.asarray(translation, np.float64))


# ---------------------------------------------------------------- grid
@dataclass(frozen=True)
class GridSpec:
    """A base-frame grid: cells of `resolution` metres covering x_range x y_range.
    Row-major like nav_msgs/OccupancyGrid: row = y index, column = x index, cell (0, 0)
    has its corner at (x_range[0], y_range[0])."""
    resolution: float
    x_range: Tuple[float, float]
    y_range: Tuple[float, float]

    def __post_init__(self):
        if not self.resolution > 0:
            raise GroundError(f"ground.resolution must be > 0, got {self.resolution}")
        for name, (lo, hi) in (("x_range", self.x_range), ("y_range", self.y_range)):
            if not hi > lo:
                raise GroundError(f"ground.{name} must be [min, max] with max > min, got [{lo}, {hi}]")
        if self.width * self.height > 25_000_000:
            raise GroundError(f"grid of {self.width}x{self.height} cells is too large; raise ground.resolution")

    # Whole cells covering the range (the last may reach past max): rounding lost up to half a cell of
    # the asked range, on one side only (y [-5, 5] at 0.3 m covered -5..4.9). 1e-6: float error
    # (7.5 / 0.1 is 75.00000000000001).
    @property
    def width(self) -> int:
        return max(1, math.ceil((self.x_range[1] - self.x_range[0]) / self.resolution - 1e-6))

    @property
    def height(self) -> int:
        return max(1, math.ceil((self.y_range[1] - self.y_range[0]) / self.resolution - 1e-6))

    def cell_centres(self) -> np.ndarray:
        """(height, width, 2) x, y of every cell centre."""
        xs = self.x_range[0] + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_range[0] + (np.arange(self.height) + 0.5) * self.resolution
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx, gy], axis=-1)


def _check_range(max_range: float) -> float:
    if not max_range > 0:
        raise GroundError(f"ground.max_range must be > 0, got {max_range}")
    return float(max_range)


_RAYS_CACHE: dict = {}
_RAYS_LOCK = threading.Lock()  # workers serving different cameras evict at once
# The grid bins the mask's pixels in blocks of k x k for masks wider than this (a block counts as
# not drivable when any of its pixels is not): a 720p mask costs what a 640x360 one does, and the
# labels behind it come from a network that ran at about that size anyway.
BIN_WIDTH = 640


def block_rays(camera: "Camera", k: int) -> np.ndarray:
    """(rows*cols, 3) float32 optical-frame rays through the centres of the k x k pixel blocks that
    tile the image (row-major): the grid's pixels."""
    gu, gv = np.meshgrid(np.arange(camera.width // k), np.arange(camera.height // k))
    return _cached_rays(camera, ("blocks", k), lambda: np.column_stack([gu.ravel(), gv.ravel()]) * k + (k - 1) / 2)


def stride_rays(camera: "Camera", stride: int) -> np.ndarray:
    """(rows*cols, 3) float32 optical-frame rays through the pixels (stride*r, stride*c): the cloud's."""
    gu, gv = np.meshgrid(np.arange(0, camera.width, stride), np.arange(0, camera.height, stride))
    return _cached_rays(camera, ("stride", stride), lambda: np.column_stack([gu.ravel(), gv.ravel()]))


def _cached_rays(camera: "Camera", which: tuple, pixels) -> np.ndarray:
    """Rays through ``pixels()`` (N x 2, u v), NaN where the lens model cannot say; the last few
    kept, as a pose followed through TF rebuilds the lookups of one camera every frame and
    undistortion is most of that cost."""
    key = (camera.width, camera.height, camera.K.tobytes(), np.asarray(camera.D).tobytes(), camera.model, which)
    with _RAYS_LOCK:
        rays = _RAYS_CACHE.get(key)
    if rays is None:
        uv = pixels().astype(np.float64)
        rays = camera.rays(uv)
        # Beyond the lens model's valid range (strong barrel distortion, the image's corners)
        # undistortion returns rays that project back elsewhere: such a pixel sees no ray we know.
        back, ok = camera.project(rays)
        with np.errstate(invalid="ignore"):
            ok &= np.linalg.norm(back - uv, axis=1) < 0.5
        rays[~ok] = np.nan
        rays = rays.astype(np.float32)
        with _RAYS_LOCK:
            if len(_RAYS_CACHE) >= 8:
                _RAYS_CACHE.pop(next(iter(_RAYS_CACHE)))
            _RAYS_CACHE[key] = rays
    return rays


def _check_above_ground(pose: CameraPose) -> None:
    """The ground is base_frame's z = 0: a camera at or below it sees no ground (cell centres
    would be read off pixels at or above the horizon, a confident grid of the sky)."""
    if not pose.t[2] > 0:
        raise GroundError(f"the camera is {pose.t[2]:.3g} m above base_frame's z = 0, the ground plane: it must "
                          "be above it (camera_xyz's z, or the TF from base_frame, whose z = 0 must be the ground)")


class GridLookup:
    """Per cell, the flat index of the pixel its ground point projects onto, or -1; and per
    pixel whose ray meets the ground inside the grid, the cell it meets it in.

    A cell's centre alone would lose anything narrower than a cell between two centres (near
    the camera a 5 cm cell covers hundreds of pixels, one of them read): a 4 cm strip of
    obstacle along the robot's path came out free. So a cell is lethal when its centre's
    pixel or any pixel landing in it is not drivable (pixels in k x k blocks for masks wider
    than BIN_WIDTH); far away, where no pixel centre lands in a cell, the centre's pixel
    decides alone. With ``obstacle_fraction`` f > 0 a cell that pixels land in is lethal only
    when at least that share of them is not drivable (speckle in the labels near the camera,
    where one cell holds hundreds of pixels, no longer blocks it; thin obstacles need f = 0)."""

    def __init__(self, camera: Camera, pose: CameraPose, spec: GridSpec, max_range: float,
                 obstacle_fraction: float = 0.0):
        if not 0.0 <= obstacle_fraction <= 1.0:
            raise GroundError(f"ground.obstacle_fraction must be 0 to 1, got {obstacle_fraction}")
        self.fraction = float(obstacle_fraction)
        self.spec = spec
        self.shape = (camera.height, camera.width)
        max_range = _check_range(max_range)
        _check_above_ground(pose)
        c = spec.cell_centres().reshape(-1, 2)
        p_base = np.column_stack([c, np.zeros(len(c))])
        p_opt = (p_base - pose.t) @ pose.R            # R^T (p - t), row-wise
        in_front = p_opt[:, 2] > 1e-6
        near = np.linalg.norm(p_opt, axis=1) <= max_range
        idx = np.full(len(c), -1, np.int64)
        cand = np.nonzero(in_front & near)[0]
        if cand.size:
            uv, ok = camera.project(p_opt[cand])
            # Pixel centres sit at integer coordinates (ROS/OpenCV): round to the nearest.
            u = np.floor(uv[:, 0] + 0.5)
            v = np.floor(uv[:, 1] + 0.5)
            inside = ok & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
            idx[cand[inside]] = (v[inside] * camera.width + u[inside]).astype(np.int64)
        self.index = idx.reshape(spec.height, spec.width)
        self._flat = np.where(idx >= 0, idx, 0)
        self._centre_seen = idx >= 0
        # Every pixel block's ray to the ground (as GroundCloud casts them), binned into cells.
        self._k = k = max(1, -(-camera.width // BIN_WIDTH))  # ceil: every mask wider than BIN_WIDTH
        self._blocks = (camera.height // k, camera.width // k)
        d = block_rays(camera, k).astype(np.float64) @ pose.R.T
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = -pose.t[2] / d[:, 2]
            hit = (d[:, 2] < 0) & (lam > 0) & (lam * np.linalg.norm(d, axis=1) <= max_range)
        px = np.nonzero(hit & np.isfinite(lam))[0]
        gx = (pose.t[0] + lam[px] * d[px, 0] - spec.x_range[0]) / spec.resolution
        gy = (pose.t[1] + lam[px] * d[px, 1] - spec.y_range[0]) / spec.resolution
        inside = np.isfinite(gx) & np.isfinite(gy) & (gx >= 0) & (gx < spec.width) & (gy >= 0) & (gy < spec.height)
        self._px = px[inside]
        self._px_cell = np.floor(gy[inside]).astype(np.int64) * spec.width + np.floor(gx[inside]).astype(np.int64)
        self._landed = np.bincount(self._px_cell, minlength=idx.size)  # pixels (blocks) per cell
        self._valid = self._centre_seen | (self._landed > 0)

    @property
    def cells_in_view(self) -> int:
        return int(self._valid.sum())

    def grid(self, drivable: np.ndarray) -> np.ndarray:
        """(H, W) mask, nonzero = drivable -> (rows, cols) int8 grid: 0 free, 100 lethal, -1 unknown."""
        if drivable.shape != self.shape:
            raise GroundError(f"mask is {drivable.shape[1]}x{drivable.shape[0]} but the calibration is for "
                              f"{self.shape[1]}x{self.shape[0]}")
        flat = drivable.reshape(-1)
        lethal = self._centre_seen & (flat[self._flat] == 0)
        blocked = drivable == 0
        if self._k > 1:  # any pixel of a block not drivable: the block is not (INTER_AREA averages 0/255)
            (bh, bw), k = self._blocks, self._k
            blocked = cv2.resize(blocked[:bh * k, :bw * k].view(np.uint8) * np.uint8(255), (bw, bh),
                                 interpolation=cv2.INTER_AREA) > 0
        bad_cells = self._px_cell[blocked.reshape(-1)[self._px]]
        if self.fraction > 0:  # cells pixels land in: by their share; the others by their centre
            bad = np.bincount(bad_cells, minlength=lethal.size)
            lethal = np.where(self._landed > 0, (bad > 0) & (bad >= self.fraction * self._landed), lethal)
        else:
            lethal[bad_cells] = True
        out = np.where(lethal, np.int8(LETHAL), np.int8(FREE))
        out[~self._valid] = UNKNOWN
        return out.reshape(self.index.shape)


# ---------------------------------------------------------------- cloud
class GroundCloud:
    """Ground points of the pixels (stride*r, stride*c): an organized cloud that lines up
    with images subsampled as img[::stride, ::stride]. NaN where a ray misses the ground
    (at or above the horizon) or hits it beyond max_range."""

    def __init__(self, camera: Camera, pose: CameraPose, stride: int, max_range: float):
        if int(stride) < 1:
            raise GroundError(f"ground.stride must be >= 1, got {stride}")
        self.stride = int(stride)
        self.shape = (camera.height, camera.width)
        max_range = _check_range(max_range)
        _check_above_ground(pose)
        vs = np.arange(0, camera.height, self.stride)
        us = np.arange(0, camera.width, self.stride)
        d = stride_rays(camera, self.stride).astype(np.float64) @ pose.R.T  # ray directions in base
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = -pose.t[2] / d[:, 2]                 # ray parameter where z = 0
        pts = pose.t + lam[:, None] * d
        dist = lam * np.linalg.norm(d, axis=1)
        hit = (d[:, 2] < 0) & (lam > 0) & (dist <= max_range)
        pts[~hit] = np.nan
        # A fisheye ray beyond 90 degrees comes back from undistortion as garbage: drop non-finite.
        pts[~np.isfinite(pts).all(axis=1)] = np.nan
        self.points = pts.astype(np.float32).reshape(len(vs), len(us), 3)
        self.rows, self.cols = len(vs), len(us)

    def subsample(self, image: np.ndarray) -> np.ndarray:
        """An image at the camera's size -> the pixels that line up with the cloud."""
        if image.shape[:2] != self.shape:
            raise GroundError(f"image is {image.shape[1]}x{image.shape[0]} but the calibration is for "
                              f"{self.shape[1]}x{self.shape[0]}")
        return np.ascontiguousarray(image[:: self.stride, :: self.stride])
