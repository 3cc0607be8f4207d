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

# A ROS 2 install space puts the package on PYTHONPATH; source it if it is there (the first found:
# this workspace's, else the sourced distro's, else Jazzy's or Humble's).
for setup in install/setup.bash /opt/ros/"${ROS_DISTRO:-jazzy}"/setup.bash /opt/ros/humble/setup.bash; do
  if [ -f "$setup" ] && [ -z "${AMENT_PREFIX_PATH:-}" ]; then
    # shellcheck disable=SC1090
    set +u; . "$setup"; set -u
  fi
done

# The interpreter that has the installed package *and* its dependencies. Checked from / so that
# a checkout in the current folder does not pass for an install (python3 would import it from
# there and then lack cv2). Candidates: $PYTHON, the one the seg-perception command was installed
# for (its shebang), this checkout's .venv, python3 (JetPack's, which has TensorRT).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
if cli="$(command -v seg-perception 2>/dev/null)"; then
  shebang="$(head -n1 "$cli" | sed -n 's/^#![[:space:]]*//p' | awk '{print $1}')"
  [ -n "$shebang" ] && candidates+=("$shebang")
fi
[ -x "$here/.venv/bin/python" ] && candidates+=("$here/.venv/bin/python")
candidates+=(python3)

usable() { (cd / && "$1" -c 'import seg_perception.cli, cv2, numpy, yaml, onnxruntime' 2>/dev/null); }
PY=""
for c in "${candidates[@]}"; do
  if usable "$c" && (cd / && "$c" -c 'import tensorrt' 2>/dev/null); then PY="$c"; break; fi
done
if [ -z "$PY" ]; then
  for c in "${candidates[@]}"; do
    if usable "$c"; then PY="$c"; break; fi
  done
fi
if [ -z "$PY" ] && [ -f "$here/setup.py" ] && (cd / && PYTHONPATH="$here" python3 -c \
    'import seg_perception.cli, cv2, numpy, yaml, onnxruntime' 2>/dev/null); then
  export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"  # a checkout whose dependencies python3 has
  PY=python3
fi
if [ -z "$PY" ]; then
  echo "jetson_doctor: error: no Python here has seg_perception with its dependencies (tried: ${candidates[*]});" \
       "install it with 'python3 -m pip install $here' (or run 'make setup' in the checkout)" >&2
  exit 2
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
# The current folder comes off sys.path: a checkout here must not shadow the installed package.
exec "$PY" -c 'import sys; sys.path[:] = [p for p in sys.path if p not in ("", ".")]
from seg_perception.cli import main; sys.exit(main(sys.argv[1:]))' doctor "$@"
