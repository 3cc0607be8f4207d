#!/usr/bin/env bash
# Build the vision_msgs-compatible messages in interfaces/vision_msgs into a virtual
# environment (default .venv) with the rosidl generators from PyPI, so that
# /segmentation/label_info can be published and tested without a ROS install.
# Needs cmake and a C/C++ compiler. On a ROS system, install ros-<distro>-vision-msgs instead.
set -euo pipefail
VENV="$(cd "${1:-.venv}" && pwd)"
SRC="$(cd "$(dirname "$0")/../interfaces/vision_msgs" && pwd)"
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT
command -v cmake >/dev/null || { echo "build_vision_msgs: cmake not found (apt-get install cmake)" >&2; exit 1; }
cmake -S "$SRC" -B "$BUILD" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$BUILD/log" 2>&1 \
  && cmake --build "$BUILD" -j2 >>"$BUILD/log" 2>&1 \
  && cmake --install "$BUILD" >>"$BUILD/log" 2>&1 \
  || { tail -30 "$BUILD/log" >&2; echo "build_vision_msgs: failed (log above)" >&2; exit 1; }
"$VENV/bin/python" -c "from vision_msgs.msg import LabelInfo" \
  && echo "build_vision_msgs: vision_msgs (VisionClass, LabelInfo) installed into $VENV"
