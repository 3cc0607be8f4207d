"""`pip install .` gives a working CLI: setup.py declares the runtime dependencies as ranges that
hold requirements.txt's pins and reach down to what Python 3.10 (JetPack 6) has, and installs the
sample bag where `demo` finds it outside a checkout.
scripts/jetson_doctor.sh runs the doctor with the interpreter that has the package, from
any folder."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CORE_ONLY, _extra_missing

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


def test_requirements_txt_pins_a_set_inside_setup_ranges():
    # setup.py declares ranges (a Jetson's Python 3.10 has none of the exact pins); requirements.txt
    # pins the tested set, which must lie inside them, and name each declared package.
    from packaging.requirements import Requirement
    d = _distribution()
    declared = {Requirement(r).name.lower(): Requirement(r)
                for r in d["req"] + d["extras"]["ros"] + d["extras"]["train"] if r != "setuptools"}
    pins = {}
    for line in _requirements():
        r = Requirement(line)
        assert len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==", line
        pins[r.name.lower()] = next(iter(r.specifier)).version
    assert set(declared) == set(pins)
    outside = {n: (pins[n], str(r.specifier)) for n, r in declared.items() if pins[n] not in r.specifier}
    assert not outside, outside
    assert not any(r.startswith(("torch", "ros-")) for r in d["req"])  # optional: extras
    for module in ("cv2", "onnxruntime", "yaml", "rosbags"):  # what `demo` offline needs is core
        assert any(module in r.lower().replace("opencv-python-headless", "cv2").replace("pyyaml", "yaml")
                   for r in d["req"]), module
    # each core range has a lower bound: scripts/check_oldest_deps.sh installs it and runs the suite
    assert all(any(s.operator == ">=" for s in r.specifier) for n, r in declared.items()
               if not n.startswith("ros-")), declared


# a distribution's import name where it differs from its own
IMPORT_NAMES = {"pyyaml": "yaml", "opencv-python-headless": "cv2", "pillow": "PIL", "ros-jazzy-rclpy": "rclpy",
                "ros-jazzy-sensor-msgs": "sensor_msgs", "ros-jazzy-std-msgs": "std_msgs",
                "ros-jazzy-diagnostic-msgs": "diagnostic_msgs", "ros-jazzy-nav-msgs": "nav_msgs"}


def test_every_declared_dependency_is_imported_by_the_package():
    """`rosbags-image` was a core requirement that nothing imported: every `pip install` fetched it
    (and a Jetson's oldest-dependency set had to resolve it) for nothing."""
    # needed but not imported by name; the ROS wheels declare no dependencies of their own
    used_otherwise = {"setuptools": "an ament_python package's build requirement",
                      "ros-jazzy-rmw-fastrtps-cpp": "the middleware rclpy loads",
                      "ros-jazzy-geometry-msgs": "nav_msgs' messages hold its Pose",
                      "ros-jazzy-lifecycle-msgs": "rclpy.lifecycle's messages"}
    import ast
    from packaging.requirements import Requirement
    d = _distribution()
    imported = set()
    for path in (REPO / "seg_perception").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    declared = [Requirement(r).name.lower() for r in d["req"] + d["extras"]["ros"] + d["extras"]["train"]]
    unused = [n for n in declared if n not in used_otherwise and IMPORT_NAMES.get(n, n) not in imported]
    assert not unused, unused


@pytest.mark.skipif(CORE_ONLY, reason="runs inside that check itself")
def test_pip_install_on_python310_with_the_oldest_dependencies(tmp_path):
    # A JetPack 6 Jetson has Python 3.10, where none of requirements.txt's pins exist: a plain
    # `pip install .` there must resolve, and the demo and the core tests must pass on the lower
    # bounds. Run as a user would, through the script the package ships (it finds the 3.10).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    r = subprocess.run(["bash", str(REPO / "scripts" / "check_oldest_deps.sh"), "", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    if r.returncode == 2 and "no Python 3.10 here" in r.stderr:
        pytest.skip("no Python 3.10 here (JetPack 6's): the oldest-dependency install is not checked")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Python 3.10" in out and "numpy==1.24.4" in out
    assert "20 in, 20 out, 0 dropped, 0 rejected" in out, out[-4000:]
    summary = r.stdout.strip().splitlines()[-1]  # pytest's last line (pip's warnings go to stderr)
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


# What may need an extra: training and the networks (torch), the node (ROS). Everything else (the
# CLI, ONNX Runtime inference, bag evaluation, reports, the doctor) must import from `pip install .`.
EXTRA_ONLY = ("seg_perception.nets", "seg_perception.train", "seg_perception.release", "seg_perception.ros")


def test_every_module_but_the_extras_imports_from_a_core_install():
    # In a core install (scripts/check_oldest_deps.sh) a new top-level `import torch` in, say, the
    # evaluation code would otherwise only show as skipped tests.
    import importlib
    import pkgutil
    import seg_perception
    failed = {}
    for m in pkgutil.walk_packages(seg_perception.__path__, "seg_perception."):
        try:
            importlib.import_module(m.name)
        except Exception as e:  # collected, so that the core-only hook cannot turn it into a skip
            failed[m.name] = f"{type(e).__name__}: {e}"
    allowed = {n: e for n, e in failed.items() if CORE_ONLY and n.startswith(EXTRA_ONLY)
               and e.startswith("ModuleNotFoundError") and _extra_missing(e)}
    assert failed == allowed, {n: e for n, e in failed.items() if n not in allowed}


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
    monkeypatch.setattr(paths, "_install_shares", lambda: [share])
    assert paths.sample_bag() == share / "data" / "camvid_val_sample"


def test_data_files_are_found_where_pip_put_them_outside_sys_prefix(tmp_path):
    # `pip install --user` puts share/ under ~/.local and Debian's system pip under /usr/local, not
    # under sys.prefix: the models, the parameter file and the sample bag must still be found.
    prefix = tmp_path / "usr_local"
    # built from a copy: pip builds in place, and a build/ left in the checkout outlives deleted modules
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for f in files:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    # --ignore-installed: else pip first uninstalls this environment's own (editable) install
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--ignore-installed", "--prefix", str(prefix), str(src)], check=True, capture_output=True,
                   timeout=600)
    site = next(prefix.glob("lib/python3*/site-packages"))
    code = ("from seg_perception import paths; print(paths.__file__); print(paths.default_model()); "
            "print(paths.default_params_file()); print(paths.sample_bag())")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    module, model, params, bag = r.stdout.split()
    assert module.startswith(str(site))  # the installed copy, not the checkout
    share = (prefix / "share" / "seg_perception").resolve()
    assert model == str(share / "models" / "rdsnet_camvid.yaml")
    assert params == str(share / "config" / "jetson.yaml")
    assert bag == str(share / "data" / "camvid_val_sample")


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
    if importlib.util.find_spec("rclpy") is None:  # a core install: rclpy itself is what is missing
        return
    # a ROS 2 without one message package the node needs: that package named, not "ROS 2 missing"
    code = ("import sys; sys.modules['nav_msgs'] = None\n"
            "from seg_perception.ros.entry_points import segmentation_node; sys.exit(segmentation_node())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "the ROS package nav_msgs is not installed here (rclpy is): sudo apt install " \
        "ros-$ROS_DISTRO-nav-msgs" in res.stderr, res.stderr
    # Humble's rclpy has the event callbacks in rclpy.qos_event, not rclpy.event_handler: the node loads.
    # (Jazzy's rclpy imports rclpy.event_handler itself, and its rclpy.qos_event re-exports from it:
    # both are loaded first, then rclpy.event_handler is taken away from what imports it next.)
    preload = ("import sys, warnings; warnings.simplefilter('ignore')  # Jazzy: qos_event is deprecated\n"
               "import rclpy.executors, rclpy.lifecycle, rclpy.qos_event\n")
    for module in ("node", "lifecycle"):
        code = (preload + "sys.modules['rclpy.event_handler'] = None\n"
                f"import seg_perception.ros.{module}; print('loaded')")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.strip() == "loaded", res.stderr
    # an rclpy older than Humble (Foxy's rclpy.exceptions has no ParameterUninitializedException): too old
    code = (preload + "import rclpy.exceptions; del rclpy.exceptions.ParameterUninitializedException\n"
            "from seg_perception.ros.entry_points import segmentation_node; sys.exit(segmentation_node())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert ("too old (cannot import name 'ParameterUninitializedException' from 'rclpy.exceptions'): the node "
            "needs ROS 2 Humble or later") in res.stderr, res.stderr
    code = ("import sys; sys.modules['rclpy._rclpy_pybind11'] = None\n"  # Jazzy's rclpy from another Python
            "from seg_perception.ros.entry_points import segmentation_node; sys.exit(segmentation_node())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "rclpy cannot load its compiled part (no module 'rclpy._rclpy_pybind11')" in res.stderr, res.stderr
    setup_py = (REPO / "setup.py").read_text()  # the console scripts are these functions
    for program in ("segmentation_node", "segmentation_lifecycle_node"):
        assert f'"{program} = seg_perception.ros.entry_points:{program}"' in setup_py
        assert callable(getattr(entry_points, program))


def test_a_command_missing_an_extra_names_the_extra_in_one_line(tmp_path):
    """eval-bag --mode live in a plain `pip install .` said `pip install diagnostic_msgs (see
    requirements.txt)`, after saying it had started the node (and emptying the report's node.log):
    ROS message modules are the `ros` extra's, and the check comes before a node is started."""
    cases = {"diagnostic_msgs": (["eval-bag", "SAMPLE", "--mode", "live"], "pip install 'seg_perception[ros]'"),
             "torch": (["models"], "pip install 'seg_perception[train]' --extra-index-url "
                                   "https://download.pytorch.org/whl/cpu")}
    for module, (args, advice) in cases.items():
        code = (f"import sys; sys.modules[{module!r}] = None  # as where it is not installed\n"
                "from seg_perception.cli import main; from seg_perception.paths import sample_bag\n"
                f"sys.exit(main([str(sample_bag()) if a == 'SAMPLE' else a for a in {args!r}]))")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)  # (a report folder, if one is made, not in the checkout)
        out = res.stdout + res.stderr
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and advice in res.stderr, out
        assert "started segmentation_node" not in out and "Traceback" not in out, out


def test_the_sdist_carries_the_tests_docs_and_scripts_and_the_readme(tmp_path):
    """The sdist held test/test_*.py but not conftest.py or ros_harness.py (8 test files import them),
    nor docs/ or scripts/ (README and messages point to both); its metadata had no description."""
    import tarfile
    code = ("import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))")
    name = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        info = t.extractfile(f"{name[:-len('.tar.gz')]}/PKG-INFO").read().decode()
    for f in ("test/conftest.py", "test/ros_harness.py", "docs/evaluation.md", "scripts/jetson_doctor.sh",
              "requirements.txt", "test/data/camvid_val_sample/metadata.yaml"):
        assert f in names, f
    assert "Description-Content-Type: text/markdown" in info and "# seg_perception" in info
