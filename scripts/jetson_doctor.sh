#!/usr/bin/env bash
# One-command check of seg_perception on a Jetson (or any NVIDIA GPU machine):
# TensorRT / CUDA / GPU info, fp32 + fp16 + int8 engine builds, label agreement
# with ONNX Runtime on the sample frames, and FPS / latency per precision.
#
#   scripts/jetson_doctor.sh                    # the shipped default model
#   scripts/jetson_doctor.sh --model my.yaml --runs 100
#
# Any argument is passed to `seg-perception doctor` (see --help). Exit code 0
# when every engine built and agreed; 1 otherwise.
set -euo pipefail

# A ROS 2 install space puts the package on PYTHONPATH; source it if it is there.
for setup in install/setup.bash /opt/ros/"${ROS_DISTRO:-jazzy}"/setup.bash; do
  if [ -f "$setup" ] && [ -z "${AMENT_PREFIX_PATH:-}" ]; then
    # shellcheck disable=SC1090
    set +u; . "$setup"; set -u
  fi
done

PY="${PYTHON:-python3}"
if ! "$PY" -c "import seg_perception" 2>/dev/null; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [ -x "$here/.venv/bin/python" ]; then
    PY="$here/.venv/bin/python"
  else
    export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi

# JetPack installs TensorRT for the system python3 only; say so before a long run.
if ! "$PY" -c "import tensorrt" 2>/dev/null; then
  echo "note: $PY cannot import tensorrt. On JetPack use the system python3 (or a venv made with" >&2
  echo "      --system-site-packages); install with: sudo apt install python3-libnvinfer" >&2
fi
if ! "$PY" -c "import cuda.bindings.runtime" 2>/dev/null && ! "$PY" -c "from cuda import cudart" 2>/dev/null; then
  echo "note: cuda-python is missing; install it with: $PY -m pip install 'cuda-python==12.*'" >&2
  echo "      (match the CUDA major version of your JetPack: 12 on JetPack 6)" >&2
fi

# Through main() (not `python -m seg_perception.cli`, which would register the
# area subcommands on a second copy of the cli module).
exec "$PY" -c 'import sys; from seg_perception.cli import main; sys.exit(main(sys.argv[1:]))' doctor "$@"
