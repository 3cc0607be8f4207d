#!/usr/bin/env bash
# Build the message packages in interfaces/ (vision_msgs' LabelInfo and VisionClass, bond's
# Status) into a virtual environment (default .venv) with the rosidl generators from PyPI, so
# that /segmentation/label_info and the managed node's bond can be published and tested without
# a ROS install. Needs cmake and a C/C++ compiler. On a ROS system, install
# ros-<distro>-vision-msgs and ros-<distro>-bond (Nav2 brings it) instead.
set -euo pipefail
VENV="$(cd "${1:-.venv}" && pwd)"
ROOT="$(cd "$(dirname "$0")/../interfaces" && pwd)"
command -v cmake >/dev/null || { echo "build_interfaces: cmake not found (apt-get install cmake)" >&2; exit 1; }
for pkg in vision_msgs:LabelInfo bond:Status; do
  name="${pkg%%:*}" msg="${pkg##*:}"
  BUILD="$(mktemp -d)"
  cmake -S "$ROOT/$name" -B "$BUILD" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$BUILD/log" 2>&1 \
    && cmake --build "$BUILD" -j2 >>"$BUILD/log" 2>&1 \
    && cmake --install "$BUILD" >>"$BUILD/log" 2>&1 \
    || { tail -30 "$BUILD/log" >&2; rm -rf "$BUILD"; echo "build_interfaces: $name failed (log above)" >&2; exit 1; }
  rm -rf "$BUILD"
  "$VENV/bin/python" -c "from $name.msg import $msg" && echo "build_interfaces: $name installed into $VENV"
done
