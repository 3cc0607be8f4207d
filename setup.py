"""ament_python package; also installs with `pip install -e .` into a virtual environment."""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "seg_perception"
SAMPLE_BAG = "test/data/camvid_val_sample"

# What a plain `pip install .` needs, as ranges: a Jetson on JetPack 6 runs Python 3.10, where the exact
# pins of requirements.txt (Python 3.11+) do not exist, and NVIDIA's torch wheels there need numpy 1.x.
# requirements.txt pins one tested set inside these ranges (test_install.py checks); the lower
# bounds are the oldest set that scripts/check_oldest_deps.sh installs and runs on Python 3.10.
# Pillow reads palette PNG labels (OpenCV expands them to colours); matplotlib needs it too.
CORE = ["setuptools", "numpy>=1.24.4,<3", "PyYAML>=6.0.1", "opencv-python-headless>=4.8.1.78", "onnx>=1.16.0",
        "onnxruntime>=1.17.0", "tqdm>=4.64.0", "matplotlib>=3.7.0", "Pillow>=10.0.0", "rosbags>=0.11.6"]
# ROS 2 Jazzy client libraries as wheels, for a machine without a ROS install (the live node,
# live evaluation, the demo's live mode); on a ROS 2 system they come from apt instead. These are
# built for one Python, so they stay pinned.
ROS = ["ros-jazzy-rclpy==7.1.6", "ros-jazzy-sensor-msgs==5.3.6", "ros-jazzy-std-msgs==5.3.6",
       "ros-jazzy-diagnostic-msgs==5.3.6", "ros-jazzy-rmw-fastrtps-cpp==8.4.3", "ros-jazzy-nav-msgs==5.3.6",
       "ros-jazzy-geometry-msgs==5.3.6", "ros-jazzy-lifecycle-msgs==2.0.3"]
# training, export and the PyTorch backend (a CPU build here; JetPack's torch on a Jetson)
TRAIN = ["torch>=2.1"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.yaml") + glob("models/*.pt") + glob("models/*.onnx")
         + glob("models/*.md")),
        # the demo's sample bag, so `seg-perception demo` runs from an install too (paths.sample_bag)
        (f"share/{PACKAGE}/data/camvid_val_sample", glob(f"{SAMPLE_BAG}/*")),
    ],
    # the CLI, ONNX Runtime inference, offline bag evaluation and reports work from a plain `pip install .`
    install_requires=CORE,
    extras_require={"ros": ROS, "train": TRAIN, "all": ROS + TRAIN},
    zip_safe=True,
    maintainer="seg_perception maintainers",
    maintainer_email="maintainers@seg-perception.dev",
    description="Real-time semantic segmentation for ROS 2 on NVIDIA Jetson",
    # the README on the package's index page and in `pip show`'s metadata (docs/ is not in the wheel)
    long_description=(Path(__file__).resolve().parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "segmentation_node = seg_perception.ros.entry_points:segmentation_node",
            "segmentation_lifecycle_node = seg_perception.ros.entry_points:segmentation_lifecycle_node",
            "seg-perception = seg_perception.cli:main",
        ],
    },
)
