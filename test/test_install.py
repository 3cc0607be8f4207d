"""`pip install .` gives a working CLI: setup.py declares the runtime dependencies with the pins
of requirements.txt, and installs the sample bag where `demo` finds it outside a checkout.
scripts/jetson_doctor.sh runs the doctor with the interpreter that has the package, from
any folder."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "jetson_doctor.sh"


def _distribution():
    code = ("import json, setuptools; from distutils.core import run_setup; d = run_setup('setup.py', "
            "stop_after='init'); print(json.dumps({'req': d.install_requires, 'extras': d.extras_require, "
            "'data': d.data_files}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def _requirements():
    return {ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")}


def test_setup_requirements_match_requirements_txt():
    d = _distribution()
    declared = set(d["req"]) | set(d["extras"]["ros"]) | set(d["extras"]["train"])
    assert declared - {"setuptools"} == _requirements()
    assert not any(r.startswith(("torch", "ros-")) for r in d["req"])  # optional: extras
    for module in ("cv2", "onnxruntime", "yaml", "rosbags"):  # what `demo` offline needs is core
        assert any(module in r.lower().replace("opencv-python-headless", "cv2").replace("pyyaml", "yaml")
                   for r in d["req"]), module


def test_sample_bag_resolves_from_an_install(tmp_path, monkeypatch):
    from seg_perception import paths
    entries = {dest: files for dest, files in _distribution()["data"]}
    files = entries["share/seg_perception/data/camvid_val_sample"]
    assert sorted(Path(f).name for f in files) == ["camvid_val_sample.mcap", "metadata.yaml"]
    share = tmp_path / "prefix" / "share" / "seg_perception"
    (share / "data" / "camvid_val_sample").mkdir(parents=True)
    for f in files:
        shutil.copy(REPO / f, share / "data" / "camvid_val_sample")
    monkeypatch.setattr(paths, "_CHECKOUT", tmp_path / "no_checkout")
    monkeypatch.setattr(paths, "_ament_share", lambda: [])
    monkeypatch.setattr(paths, "_prefix_share", lambda: share)
    assert paths.sample_bag() == share / "data" / "camvid_val_sample"


def _doctor(script, cwd, path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = path
    return subprocess.run(["bash", str(script), "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_jetson_doctor_picks_the_python_that_has_the_package(tmp_path):
    # From the checkout root, as the README shows: python3 there imports the checkout but lacks
    # cv2; the script must take the checkout's .venv instead.
    r = _doctor(SCRIPT, REPO, "/usr/bin:/bin")
    assert r.returncode == 0 and "usage: seg-perception doctor" in r.stdout, r.stderr
    # A copy outside any checkout: the interpreter named by the seg-perception command's shebang.
    alone = tmp_path / "alone" / "scripts"
    alone.mkdir(parents=True)
    shutil.copy(SCRIPT, alone)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "seg-perception").write_text(f"#!{REPO / '.venv' / 'bin' / 'python'}\nimport sys\n")
    (fake_bin / "seg-perception").chmod(0o755)
    r = _doctor(alone / "jetson_doctor.sh", tmp_path, f"{fake_bin}:/usr/bin:/bin")
    assert r.returncode == 0 and "usage: seg-perception doctor" in r.stdout, r.stderr


def test_jetson_doctor_without_package_says_so(tmp_path):
    alone = tmp_path / "alone" / "scripts"
    alone.mkdir(parents=True)
    shutil.copy(SCRIPT, alone)
    r = _doctor(alone / "jetson_doctor.sh", tmp_path, "/usr/bin:/bin")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "no Python here has seg_perception" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_node_commands_without_ros_say_so_in_one_line():
    """A plain `pip install .` has no rclpy: the node commands name what is missing, exit 2."""
    from seg_perception.ros import entry_points
    for program in ("segmentation_node", "segmentation_lifecycle_node"):
        code = ("import sys; sys.modules['rclpy'] = None  # as where rclpy is not installed\n"
                f"from seg_perception.ros.entry_points import {program}; sys.exit({program}())")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert res.stderr.count("\n") == 1 and "no module 'rclpy'" in res.stderr, res.stderr
        assert "pip install 'seg_perception[ros]'" in res.stderr
    setup_py = (REPO / "setup.py").read_text()  # the console scripts are these functions
    for program in ("segmentation_node", "segmentation_lifecycle_node"):
        assert f'"{program} = seg_perception.ros.entry_points:{program}"' in setup_py
        assert callable(getattr(entry_points, program))
