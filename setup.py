"""ament_python package; also installs with `pip install -e .` into a virtual environment."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "seg_perception"

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
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    zip_safe=True,
    maintainer="seg_perception maintainers",
    maintainer_email="maintainers@seg-perception.dev",
    description="Real-time semantic segmentation for ROS 2 on NVIDIA Jetson",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "segmentation_node = seg_perception.ros.node:main",
            "segmentation_lifecycle_node = seg_perception.ros.lifecycle:main",
            "seg-perception = seg_perception.cli:main",
        ],
    },
)
