"""Ground projection against an independent computation (no ROS).

A synthetic calibrated camera looks at a flat ground with a painted road. The reference
side builds the camera pose as a look-at (forward, right, down vectors) or with
cv2.Rodrigues, projects with cv2.projectPoints / cv2.fisheye.projectPoints, and renders
the camera's label image by casting each pixel's ray itself: none of it goes through
seg_perception.runtime.ground's projection code."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from seg_perception.runtime.ground import (Camera, CameraPose, GridLookup, GridSpec, GroundCloud, GroundError,
                                           rpy_matrix)

W, H = 640, 480
K = [600.0, 0.0, 319.5, 0.0, 600.0, 239.5, 0.0, 0.0, 1.0]
LENSES = {
    "plumb_bob": [-0.25, 0.08, 0.001, -0.0005, 0.0],
    "rational_polynomial": [-0.2, 0.05, 0.0005, 0.0003, 0.01, 0.02, 0.001, 0.0005],
    "equidistant": [0.3, -0.1, 0.02, 0.0],
    "none": [],
}
ROAD, OTHER = 3, 1


def paint(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The ground's classes: a road patch with edges across and along the view."""
    road = (np.abs(y - 0.3) < 1.2) & (x > 1.5) & (x < 7.0)
    return np.where(road, ROAD, OTHER).astype(np.uint8)


def look_at(cam_xyz, pitch: float, yaw: float):
    """World->camera rvec, tvec for a roll-free camera pitched down by `pitch`, yawed left by `yaw`."""
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)])
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    R_cw = np.stack([right, down, f])  # rows: camera axes in the world
    return cv2.Rodrigues(R_cw)[0], -R_cw @ np.asarray(cam_xyz, float), R_cw


def rodrigues_pose(cam_xyz, roll: float, pitch: float, yaw: float):
    """The same via axis-angle compositions (fixed axes x, then y, then z) and the optical axes."""
    rot = lambda axis, a: cv2.Rodrigues(np.asarray(axis, float) * a)[0]
    R_wb = rot([0, 0, 1], yaw) @ rot([0, 1, 0], pitch) @ rot([1, 0, 0], roll)
    opt_in_body = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)  # rows: optical x, y, z in body
    R_cw = opt_in_body @ R_wb.T
    return cv2.Rodrigues(R_cw)[0], -R_cw @ np.asarray(cam_xyz, float), R_cw


def ref_project(pts_world: np.ndarray, rvec, tvec, model: str) -> np.ndarray:
    p = pts_world.reshape(-1, 1, 3).astype(np.float64)
    k = np.asarray(K).reshape(3, 3)
    if model == "equidistant":
        uv, _ = cv2.fisheye.projectPoints(p, rvec, tvec, k, np.asarray(LENSES[model]))
    else:
        uv, _ = cv2.projectPoints(p, rvec, tvec, k, np.asarray(LENSES[model] or np.zeros(5)))
    return uv.reshape(-1, 2)


def ref_rays_world(uv: np.ndarray, R_cw: np.ndarray, model: str) -> np.ndarray:
    k = np.asarray(K).reshape(3, 3)
    pts = uv.reshape(-1, 1, 2).astype(np.float64)
    if model == "equidistant":
        n = cv2.fisheye.undistortPoints(pts, k, np.asarray(LENSES[model]))
    else:
        d = np.asarray(LENSES[model] or np.zeros(5))
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4; OpenCV 5 gave undistortPoints the criterion
            n = cv2.undistortPointsIter(pts, k, d, None, None, crit)
        else:
            n = cv2.undistortPoints(pts, k, d, None, None, None, crit)
    n = n.reshape(-1, 2)
    return np.column_stack([n, np.ones(len(n))]) @ R_cw  # R_cw^T @ ray, row-wise


def render_labels(cam_xyz, R_cw, model: str) -> np.ndarray:
    """The label image the camera would see: each pixel's ray cast onto z = 0 and painted.
    Pixels above the horizon see sky (class 0)."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d = ref_rays_world(np.column_stack([u.ravel(), v.ravel()]), R_cw, model)
    s = -cam_xyz[2] / d[:, 2]
    hit = (d[:, 2] < 0) & (s > 0)
    x = cam_xyz[0] + s * d[:, 0]
    y = cam_xyz[1] + s * d[:, 1]
    out = np.where(hit, paint(np.where(hit, x, 0), np.where(hit, y, 0)), 0)
    return out.reshape(H, W).astype(np.uint8)


def expected_grid(spec: GridSpec, cam_xyz, rvec, tvec, R_cw, model: str, max_range: float) -> np.ndarray:
    xs = spec.x_range[0] + (np.arange(spec.width) + 0.5) * spec.resolution
    ys = spec.y_range[0] + (np.arange(spec.height) + 0.5) * spec.resolution
    gx, gy = np.meshgrid(xs, ys)
    pts = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    z_cam = (pts - cam_xyz) @ R_cw[2]
    dist = np.linalg.norm(pts - cam_xyz, axis=1)
    uv = ref_project(pts, rvec, tvec, model)
    inside = (z_cam > 0) & (dist <= max_range) & (uv[:, 0] > -0.5) & (uv[:, 0] < W - 0.5) \
        & (uv[:, 1] > -0.5) & (uv[:, 1] < H - 0.5)
    val = np.where(paint(gx.ravel(), gy.ravel()) == ROAD, 0, 100)
    return np.where(inside, val, -1).reshape(gx.shape).astype(np.int8)


def boundary(grid: np.ndarray) -> np.ndarray:
    """Cells with a neighbour (8-connected) of a different expected value."""
    g = grid.astype(np.int16)
    p = np.pad(g, 1, mode="edge")
    out = np.zeros(g.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= p[1 + dy: 1 + dy + g.shape[0], 1 + dx: 1 + dx + g.shape[1]] != g
    return out


def camera(model: str) -> Camera:
    return Camera.from_camera_info(W, H, K, LENSES[model], model)


SPEC = GridSpec(0.05, (0.5, 6.0), (-3.0, 3.0))


@pytest.mark.parametrize("model", list(LENSES))
def test_grid_matches_independent_projection(model):
    cam_xyz, pitch = np.array([0.2, -0.1, 1.2]), 0.35
    rvec, tvec, R_cw = look_at(cam_xyz, pitch, 0.0)
    pose = CameraPose.from_body_xyz_rpy(cam_xyz, [0.0, pitch, 0.0])
    lut = GridLookup(camera(model), pose, SPEC, max_range=6.5)
    labels = render_labels(cam_xyz, R_cw, model)
    grid = lut.grid(np.where(labels == ROAD, 255, 0).astype(np.uint8))
    exp = expected_grid(SPEC, cam_xyz, rvec, tvec, R_cw, model, 6.5)
    assert grid.shape == (SPEC.height, SPEC.width) == (120, 110)
    assert (exp == 0).sum() > 1500 and (exp == 100).sum() > 1500 and (exp == -1).sum() > 1500  # a real scene
    wrong = (grid != exp) & ~boundary(exp)
    assert not wrong.any(), f"{wrong.sum()} cells differ away from boundaries, e.g. at {np.argwhere(wrong)[:5]}"
    assert ((grid != exp).sum()) < 0.02 * grid.size


def test_grid_with_roll_and_yaw_against_rodrigues_pose():
    cam_xyz, rpy = np.array([-0.3, 0.4, 1.5]), (0.08, 0.4, -0.25)
    rvec, tvec, R_cw = rodrigues_pose(cam_xyz, *rpy)
    lut = GridLookup(camera("plumb_bob"), CameraPose.from_body_xyz_rpy(cam_xyz, rpy), SPEC, max_range=8.0)
    labels = render_labels(cam_xyz, R_cw, "plumb_bob")
    grid = lut.grid(np.where(labels == ROAD, 255, 0).astype(np.uint8))
    exp = expected_grid(SPEC, cam_xyz, rvec, tvec, R_cw, "plumb_bob", 8.0)
    assert (exp >= 0).sum() > 3000
    assert not ((grid != exp) & ~boundary(exp)).any()


def test_cells_behind_the_camera_are_unknown():
    # Tilted up: the ground ahead is beyond the grid, and the cells behind the camera would be
    # mirrored into the upper half of the image by a projection that forgot they are behind.
    cam_xyz = np.array([0.0, 0.0, 1.2])
    spec = GridSpec(0.05, (-6.0, 6.0), (-3.0, 3.0))
    lut = GridLookup(camera("none"), CameraPose.from_body_xyz_rpy(cam_xyz, [0.0, -0.3, 0.0]), spec, 50.0)
    assert lut.cells_in_view == 0
    assert (lut.grid(np.full((H, W), 255, np.uint8)) == -1).all()
    # Looking left: only cells with y > 0 can be seen.
    spec = GridSpec(0.05, (0.5, 6.0), (-6.0, 6.0))
    lut = GridLookup(camera("none"), CameraPose.from_body_xyz_rpy(cam_xyz, [0.0, 0.3, np.pi / 2]), spec, 50.0)
    grid = lut.grid(np.full((H, W), 255, np.uint8))
    ys = spec.cell_centres()[..., 1]
    assert lut.cells_in_view > 1000 and (grid[ys < 0] == -1).all() and (grid[ys > 2] == 0).any()


def test_each_cell_reads_the_pixel_its_centre_projects_to():
    """Exact: a checkerboard mask of 1-pixel squares, so reading a neighbouring pixel changes the
    value. A centre on a non-drivable pixel makes its cell lethal; a cell no pixel centre lands in
    (far away) takes its centre's pixel alone."""
    cam_xyz, pitch = np.array([0.0, 0.0, 1.5]), 0.5
    stripes = np.zeros((H, W), np.uint8)
    stripes[:, 1::2] = 255
    stripes[1::2] ^= 255  # a checkerboard: rows and columns both matter
    # and a camera near level over a far grid, where most cells hold no pixel centre
    far = (GridSpec(0.05, (15.0, 40.0), (-3.0, 3.0)), 0.1)
    for model, (spec, pitch) in [(m, v) for m in LENSES for v in ((SPEC, pitch), far)]:
        rvec, tvec, R_cw = look_at(cam_xyz, pitch, 0.0)
        lut = GridLookup(camera(model), CameraPose.from_body_xyz_rpy(cam_xyz, [0, pitch, 0]), spec, 50.0)
        grid = lut.grid(stripes)
        c = spec.cell_centres().reshape(-1, 2)
        uv = ref_project(np.column_stack([c, np.zeros(len(c))]), rvec, tvec, model)
        iu, iv = np.floor(uv[:, 0] + 0.5).astype(int), np.floor(uv[:, 1] + 0.5).astype(int)
        seen = (iu >= 0) & (iu < W) & (iv >= 0) & (iv < H)
        # (a centre within 1e-6 px of a pixel border may round either way)
        clear = seen & (np.abs(uv[:, 0] % 1 - 0.5) > 1e-6) & (np.abs(uv[:, 1] % 1 - 0.5) > 1e-6)
        want = np.where(stripes[iv.clip(0, H - 1), iu.clip(0, W - 1)] > 0, 0, 100)
        g = grid.ravel()
        alone = np.bincount(lut._px_cell, minlength=g.size) == 0  # no pixel centre lands in the cell
        assert clear.sum() > 2000 and (spec is SPEC or (clear & alone).sum() > 2000), (model, spec)
        np.testing.assert_array_equal(g[clear & (want == 100)], 100, err_msg=model)
        np.testing.assert_array_equal(g[clear & alone], want[clear & alone], err_msg=model)
        assert (g[~seen & alone] == -1).all(), model


def test_pixels_beyond_the_lens_model_give_no_ray():
    """Strong barrel distortion (k1 -0.4 at f 300): in the image's corners undistortion returns rays
    that project back elsewhere. They marked grid cells in view (free, or lethal under a dark
    vignette) and put cloud points where the pixel does not look; now they are NaN. Every ray kept
    projects back onto its pixel (OpenCV's projectPoints, independent of the package)."""
    from seg_perception.runtime.ground import block_rays
    k = [300.0, 0.0, 319.5, 0.0, 300.0, 239.5, 0.0, 0.0, 1.0]
    cam = Camera.from_camera_info(W, H, k, [-0.4, 0.0, 0.0, 0.0, 0.0], "plumb_bob")
    rays = block_rays(cam, 1).astype(np.float64)
    kept = np.isfinite(rays).all(axis=1)
    assert 0.2 < kept.mean() < 0.9  # the corners go, the middle stays
    gu, gv = np.meshgrid(np.arange(W), np.arange(H))
    uv = np.column_stack([gu.ravel(), gv.ravel()])[kept]
    back = cv2.projectPoints(rays[kept].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), np.reshape(k, (3, 3)),
                             np.array([-0.4, 0.0, 0.0, 0.0, 0.0]))[0].reshape(-1, 2)
    assert np.abs(back - uv).max() < 0.5
    pose = CameraPose.from_body_xyz_rpy([0.0, 0.0, 0.9], [0.0, 0.35, 0.0])
    cloud = GroundCloud(cam, pose, 1, 50.0)
    assert not np.isfinite(cloud.points[..., 0]).ravel()[~kept].any()


@pytest.mark.parametrize("scale", [1, 2])
def test_an_obstacle_narrower_than_a_cell_is_not_lost_between_cell_centres(scale):
    """A strip of obstacle 4 cm wide, 1 m long, between the centres of two rows of 5 cm cells
    (y 0.03-0.07, centres at 0.025 and 0.075): every cell it crosses is lethal (reading only
    the centres' pixels, none was), and a mask with nothing but it leaves the rest free. A mask
    twice as wide as BIN_WIDTH is binned in 2x2 blocks: a block at the strip's edge may mark the
    cell beside it too (the cautious side), never one farther."""
    cam = camera("none").scaled(W * scale, H * scale)
    cam_xyz = np.array([0.0, 0.0, 0.9])
    pose = CameraPose.from_body_xyz_rpy(cam_xyz, [0.0, 0.35, 0.0])
    spec = GridSpec(0.05, (0.5, 4.0), (-1.5, 1.5))
    cloud = GroundCloud(cam, pose, 1, 50.0)
    x, y = cloud.points[..., 0], cloud.points[..., 1]
    with np.errstate(invalid="ignore"):
        strip = (y > 0.03) & (y < 0.07) & (x > 1.5) & (x < 2.5)
    assert strip.sum() > 1000
    lut = GridLookup(cam, pose, spec, 50.0)
    grid = lut.grid(np.where(strip, 0, 255).astype(np.uint8))
    c = spec.cell_centres()
    crossed = (np.abs(c[..., 1] - 0.05) < 0.03) & (c[..., 0] > 1.5) & (c[..., 0] < 2.5)
    assert crossed.sum() == 40 and (grid[crossed] == 100).all()
    beside = cv2.dilate(crossed.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 if scale > 1 else crossed
    assert (grid[~beside & (grid >= 0)] == 0).all() and (grid == 0).sum() > 1000
    if scale == 1:  # one non-drivable pixel: the one cell its ground point lies in
        one = np.full((H, W), 255, np.uint8)
        v, u = 300, 320
        one[v, u] = 0
        px, py = cloud.points[v, u, :2]
        cell = (int((py - spec.y_range[0]) // spec.resolution), int((px - spec.x_range[0]) // spec.resolution))
        assert np.argwhere(lut.grid(one) == 100).tolist() == [list(cell)]


@pytest.mark.parametrize("model", list(LENSES))
def test_lens_model_matches_opencv(model):
    rng = np.random.default_rng(1)
    p = np.column_stack([rng.uniform(-1.2, 1.2, 500), rng.uniform(-0.9, 0.9, 500), np.ones(500)]) \
        * rng.uniform(0.5, 20, (500, 1))
    uv, ok = camera(model).project(p)
    assert ok.all()
    np.testing.assert_allclose(uv, ref_project(p, np.zeros(3), np.zeros(3), model), atol=1e-6)


@pytest.mark.parametrize("model", list(LENSES))
def test_a_scaled_camera_sees_the_resized_image(model):
    """Camera.scaled(w, h) is the camera of the image resized to w x h: every point lands where
    it lands in the full image, mapped pixel centre to pixel centre ((u + 0.5) * s - 0.5),
    checked against OpenCV's projection with the full calibration."""
    rng = np.random.default_rng(2)
    p = np.column_stack([rng.uniform(-1.0, 1.0, 300), rng.uniform(-0.8, 0.8, 300), np.ones(300)]) \
        * rng.uniform(0.5, 20, (300, 1))
    full = ref_project(p, np.zeros(3), np.zeros(3), model)
    small = camera(model).scaled(W // 3, H // 2)
    assert (small.width, small.height) == (W // 3, H // 2)
    uv, ok = small.project(p)
    assert ok.all()
    sx, sy = (W // 3) / W, (H // 2) / H
    np.testing.assert_allclose(uv[:, 0], (full[:, 0] + 0.5) * sx - 0.5, atol=1e-6)
    np.testing.assert_allclose(uv[:, 1], (full[:, 1] + 0.5) * sy - 0.5, atol=1e-6)
    full_cam = camera(model)
    assert full_cam.scaled(W, H) is full_cam


def test_max_range_cuts_the_grid():
    cam_xyz = np.array([0.0, 0.0, 1.0])
    pose = CameraPose.from_body_xyz_rpy(cam_xyz, [0.0, 0.2, 0.0])
    near = GridLookup(camera("none"), pose, SPEC, max_range=3.0).grid(np.full((H, W), 255, np.uint8))
    far = GridLookup(camera("none"), pose, SPEC, max_range=100.0).grid(np.full((H, W), 255, np.uint8))
    c = SPEC.cell_centres()
    dist = np.sqrt(c[..., 0] ** 2 + c[..., 1] ** 2 + 1.0)
    # (a cell astride the range keeps the pixels of its near part: a cell's half diagonal is 0.035)
    assert (near[dist > 3.0 + SPEC.resolution] == -1).all() and (near[(dist <= 3.0) & (far == 0)] == 0).all()
    assert (far[dist > 3.0] == 0).sum() > 1000


def test_positive_pitch_looks_down():
    pose = CameraPose.from_body_xyz_rpy([0, 0, 1], [0.0, 0.5, 0.0])
    optical_axis = pose.R[:, 2]
    np.testing.assert_allclose(optical_axis, [np.cos(0.5), 0.0, -np.sin(0.5)], atol=1e-12)
    np.testing.assert_allclose(pose.R[:, 0], [0, -1, 0], atol=1e-12)  # image right = robot's right
    q = cv2.Rodrigues(np.array([0.0, 0.0, 0.7]))[0]
    np.testing.assert_allclose(rpy_matrix(0, 0, 0.7), q, atol=1e-12)


@pytest.mark.parametrize("model", ["plumb_bob", "equidistant"])
def test_cloud_round_trips_through_independent_projection(model):
    cam_xyz, pitch, stride, max_range = np.array([0.2, -0.1, 1.2]), 0.35, 4, 7.0
    rvec, tvec, R_cw = look_at(cam_xyz, pitch, 0.0)
    cloud = GroundCloud(camera(model), CameraPose.from_body_xyz_rpy(cam_xyz, [0.0, pitch, 0.0]), stride, max_range)
    assert cloud.points.shape == (H // stride, W // stride, 3) and cloud.points.dtype == np.float32
    pts = cloud.points.reshape(-1, 3)
    valid = np.isfinite(pts).all(axis=1)
    # The reference decides independently which rays hit the ground within max_range.
    v, u = np.mgrid[0:H:stride, 0:W:stride]
    uv = np.column_stack([u.ravel(), v.ravel()]).astype(float)
    d = ref_rays_world(uv, R_cw, model)
    s = -cam_xyz[2] / d[:, 2]
    ref_hit = (d[:, 2] < 0) & (s * np.linalg.norm(d, axis=1) <= max_range)
    assert 0.2 * len(pts) < valid.sum() < 0.95 * len(pts)
    np.testing.assert_array_equal(valid, ref_hit)
    p = pts[valid].astype(np.float64)
    assert np.abs(p[:, 2]).max() < 1e-4                                   # on the ground
    assert np.linalg.norm(p - cam_xyz, axis=1).max() <= max_range + 1e-3
    back = ref_project(p, rvec, tvec, model)
    err = np.abs(back - uv[valid]).max()
    assert err < 0.05, f"ground points project back {err:.3f} px off their pixels"


def test_cloud_lines_up_with_subsampled_labels():
    cam_xyz, pitch = np.array([0.0, 0.0, 1.2]), 0.35
    _, _, R_cw = look_at(cam_xyz, pitch, 0.0)
    cloud = GroundCloud(camera("plumb_bob"), CameraPose.from_body_xyz_rpy(cam_xyz, [0, pitch, 0]), 4, 7.0)
    labels = cloud.subsample(render_labels(cam_xyz, R_cw, "plumb_bob"))
    assert labels.shape == cloud.points.shape[:2]
    ok = np.isfinite(cloud.points[..., 0])
    np.testing.assert_array_equal(labels[ok], paint(cloud.points[ok][:, 0], cloud.points[ok][:, 1]))


def test_bad_calibration_and_parameters_say_what_is_wrong():
    with pytest.raises(GroundError, match="no calibration"):
        Camera.from_camera_info(W, H, [0.0] * 9, [], "plumb_bob")
    with pytest.raises(GroundError, match="unsupported distortion model 'kannala'"):
        Camera.from_camera_info(W, H, K, [0.1], "kannala")
    with pytest.raises(GroundError, match="x_range must be"):
        GridSpec(0.05, (5.0, 1.0), (-1.0, 1.0))
    with pytest.raises(GroundError, match="stride must be >= 1"):
        GroundCloud(camera("none"), CameraPose.from_body_xyz_rpy([0, 0, 1], [0, 0.3, 0]), 0, 5.0)
    skewed = list(K)
    skewed[1] = 3.0
    with pytest.raises(GroundError, match="skew of 3"):
        Camera.from_camera_info(W, H, skewed, [], "plumb_bob")
    for z in (0.0, -0.5):  # a camera at or under the ground plane read the horizon's pixels as the ground
        for make in (lambda pose: GridLookup(camera("none"), pose, SPEC, 5.0),
                     lambda pose: GroundCloud(camera("none"), pose, 4, 5.0)):
            with pytest.raises(GroundError, match="above base_frame's z = 0"):
                make(CameraPose.from_body_xyz_rpy([0, 0, z], [0, 0.3, 0]))
    lut = GridLookup(camera("none"), CameraPose.from_body_xyz_rpy([0, 0, 1], [0, 0.3, 0]), SPEC, 5.0)
    with pytest.raises(GroundError, match="calibration is for 640x480"):
        lut.grid(np.zeros((360, 480), np.uint8))


def test_grid_covers_the_whole_range_asked_for():
    """Whole cells covering x_range and y_range: a range that is not a multiple of the resolution
    gets one more cell (reaching past max), not one fewer; exact multiples keep their count."""
    spec = GridSpec(0.3, (0.5, 10.0), (-5.0, 5.0))
    assert (spec.width, spec.height) == (32, 34)
    assert spec.x_range[0] + spec.width * 0.3 >= 10.0 and spec.y_range[0] + spec.height * 0.3 >= 5.0
    assert (GridSpec(0.1, (0.5, 8.0), (-4.0, 4.0)).width, GridSpec(0.1, (0.5, 8.0), (-4.0, 4.0)).height) == (75, 80)
    assert GridSpec(0.05, (0.5, 10.0), (-5.0, 5.0)).width == 190
    assert GridSpec(0.3, (0.0, 0.1), (0.0, 0.1)).width == 1


def test_obstacle_fraction_lets_speckle_through_and_keeps_blocks():
    """Any one non-drivable pixel made a near cell lethal (hundreds of pixels land in it), so label
    speckle flooded the robot's path; with obstacle_fraction a cell needs that share of its pixels."""
    from seg_perception.runtime.ground import GroundError
    cam = Camera.from_camera_info(640, 480, [420.0, 0, 319.5, 0, 420.0, 239.5, 0, 0, 1], [0.0] * 5, "plumb_bob")
    pose = CameraPose.from_body_xyz_rpy([0.0, 0.0, 1.2], [0.0, 0.26, 0.0])
    spec = GridSpec(0.05, (0.5, 4.0), (-2.0, 2.0))
    mask = np.full((480, 640), 255, np.uint8)
    rng = np.random.default_rng(0)
    speckle = mask.copy()
    speckle.reshape(-1)[rng.choice(mask.size, mask.size // 200, replace=False)] = 0  # 0.5 % of the pixels
    block = mask.copy()
    block[400:440, 300:340] = 0  # a 40 x 40 pixel obstacle near the camera
    any_px = GridLookup(cam, pose, spec, 10.0)
    share = GridLookup(cam, pose, spec, 10.0, obstacle_fraction=0.2)
    near = slice(0, 30)  # rows x 0.5-2 m
    assert (any_px.grid(speckle)[:, near] == 100).sum() > 20 * (share.grid(speckle)[:, near] == 100).sum()
    assert (share.grid(block) == 100).sum() >= 0.8 * (any_px.grid(block) == 100).sum() > 0
    np.testing.assert_array_equal(share.grid(mask), any_px.grid(mask))  # nothing lethal, the same unknowns
    # The threshold itself: cells whose landed pixels are 15 %, 18 %, 22 %, 25 % non-drivable. The
    # pixels landing in each cell come from rays cast here (look_at pose, pinhole through each pixel
    # centre); the marked ones are those nearest the cell's middle. Exactly the 22 % and 25 % cells
    # are lethal at obstacle_fraction 0.2.
    cam_xyz = np.array([0.0, 0.0, 1.2])
    R_cw = look_at(cam_xyz, 0.26, 0.0)[2]
    u, v = np.meshgrid(np.arange(640.0), np.arange(480.0))
    d = np.stack([(u - 319.5) / 420, (v - 239.5) / 420, np.ones_like(u)], -1) @ R_cw
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -cam_xyz[2] / d[..., 2]
        gx = (lam * d[..., 0] - spec.x_range[0]) / spec.resolution
        gy = (lam * d[..., 1] - spec.y_range[0]) / spec.resolution
        landed = (d[..., 2] < 0) & (lam * np.linalg.norm(d, axis=-1) <= 10.0)
    cells = {(30, 15): 0.25, (34, 15): 0.15, (40, 16): 0.22, (44, 16): 0.18, (50, 17): 0.25, (54, 17): 0.15}
    shares = mask.copy()
    for (r, c), part in cells.items():
        vs, us = np.nonzero(landed & (np.floor(gy) == r) & (np.floor(gx) == c))
        assert len(vs) > 100  # near cells: over 100 pixels each
        middle = np.argsort(np.hypot(gx[vs, us] - c - 0.5, gy[vs, us] - r - 0.5))[:round(part * len(vs))]
        shares[vs[middle], us[middle]] = 0
    assert sorted(map(tuple, np.argwhere(share.grid(shares) == 100).tolist())) == \
        sorted(cell for cell, part in cells.items() if part > 0.2)
    assert (any_px.grid(shares) == 100).sum() == len(cells)  # any one pixel: all six
    with pytest.raises(GroundError, match="obstacle_fraction must be 0 to 1"):
        GridLookup(cam, pose, spec, 10.0, obstacle_fraction=1.5)


@pytest.mark.parametrize("lens", [[0.05, -0.01, 0.002, -0.0005], [0.3, -0.1, 0.02, 0.0]])
def test_fisheye_rays_far_off_axis(lens):
    """cv2.fisheye.undistortPoints clamps the distorted angle at 90 degrees, which a lens with k1 > 0
    reaches long before the true angle does: a pixel seeing 88 degrees got a ray at 84, the round
    trip then refused it, and a wide lens's outer band had no ray at all (thin obstacles beside the
    robot read free). Each pixel's ray is the one that projects onto it (OpenCV's own projection),
    up to the lens model's monotonic range."""
    cam = Camera.from_camera_info(W, H, [200.0, 0, 319.5, 0, 200.0, 239.5, 0, 0, 1], lens, "equidistant")
    limit = cam._monotonic_limit()
    angles = np.radians(np.linspace(1.0, min(88.0, np.degrees(limit) - 0.5), 60))
    az = np.linspace(0, 2 * np.pi, len(angles), endpoint=False)
    pts = np.column_stack([np.sin(angles) * np.cos(az), np.sin(angles) * np.sin(az), np.cos(angles)])
    uv, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                      np.asarray(cam.K), np.asarray(lens, float))
    rays = cam.rays(uv.reshape(-1, 2))
    assert np.isfinite(rays).all()
    got = np.arctan(np.hypot(rays[:, 0], rays[:, 1]) / rays[:, 2])
    np.testing.assert_allclose(np.degrees(got), np.degrees(angles), atol=1e-6)
    np.testing.assert_allclose(np.arctan2(rays[:, 1], rays[:, 0]) % (2 * np.pi), az, atol=1e-6)
