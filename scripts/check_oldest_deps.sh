#!/usr/bin/env bash
# `pip install .` on the oldest dependencies setup.py allows, with the Python a JetPack 6 Jetson
# has (3.10): installs each core requirement at its lower bound into a fresh venv, installs the
# package (a wheel, as a user gets it), runs the demo from another folder, and runs the test suite
# with the tests that need an extra (torch, ROS) skipped.
#
#   scripts/check_oldest_deps.sh [PYTHON [WORK_DIR]]
#
# PYTHON defaults to python3.10 on PATH, else pyenv's newest 3.10 ("" picks that default). Exit code
# 0 when all of it passed; the venv stays in WORK_DIR (default: a new temporary folder) for a look.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# an interpreter that runs and is 3.10 (a pyenv shim for a version not selected does not run)
py=""
for cand in "${1:-}" "$(command -v python3.10 2>/dev/null || true)" \
            $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python 2>/dev/null | sort -rV); do
  if [ -n "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    py="$cand"; break
  fi
done
if [ -z "$py" ]; then
  echo "check_oldest_deps: no Python 3.10 here; pass one: scripts/check_oldest_deps.sh /path/to/python3.10" >&2
  exit 2
fi
work="${2:-$(mktemp -d)}"
mkdir -p "$work"
echo "[oldest-deps] $("$py" --version) in $work/venv"

"$py" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip -q --disable-pip-version-check)

# The lower bound of each core requirement, read from setup.py's CORE list without running setup().
"$work/venv/bin/python" - "$repo/setup.py" > "$work/oldest.txt" <<'EOF'
import ast, re, sys
tree = ast.parse(open(sys.argv[1]).read())
core = next(ast.literal_eval(n.value) for n in tree.body
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CORE")
for spec in core:
    m = re.match(r"([A-Za-z0-9_.-]+)>=([0-9][^,]*)", spec)
    if m:
        print(f"{m.group(1)}=={m.group(2)}")
EOF
echo "[oldest-deps] $(tr '\n' ' ' < "$work/oldest.txt")"
"${pip[@]}" install -r "$work/oldest.txt" pytest wheel  # wheel: the tests build the package unisolated
# the package as a user installs it, held to the same versions; built from a copy of the checkout's
# files (pip builds in place, and setuptools' build/ there would keep modules deleted since)
src="$repo"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  src="$work/src"
  mkdir -p "$src"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src" 2>/dev/null || true)
fi
"${pip[@]}" install -c "$work/oldest.txt" "$src"
"${pip[@]}" check

mkdir -p "$work/elsewhere"
(cd "$work/elsewhere" && "$work/venv/bin/seg-perception" demo --out "$work/elsewhere/demo")

# The checkout's tests against this interpreter and these versions (conftest puts the checkout
# first on sys.path: the same code the wheel holds).
cd "$repo"
SEG_PERCEPTION_CORE_ONLY=1 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider test
