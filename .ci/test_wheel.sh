#!/usr/bin/env bash
# Tests an installed wheel the way a user gets it (called by .ci/run after the build):
#   bash .ci/test_wheel.sh WHEEL SCRATCH_DIR
# a fresh venv with no compiler on PATH and no hevit source importable: the wheel with its core
# dependencies only, the light-import check, the README's API example (.ci/check_wheel.py); then
# the extras [all,test] into the same venv from the same wheel file. .ci/run then lints and runs
# the README's test command against that installed hevit (venv: SCRATCH_DIR/venv). Every step is
# timed.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL=$(realpath "$1")
WORK=$(realpath "$2")
step() { printf '\n=== %s\n' "$*"; }

# A PATH without compilers, linkers or build tools: every program of the system folders except
# those, so an install that tries to compile anything fails instead of quietly building.
NOCC="$WORK/nocc-bin"
mkdir -p "$NOCC"
for dir in /usr/local/bin /usr/bin /bin; do
  for exe in "$dir"/*; do
    name=$(basename "$exe")
    [[ -e "$NOCC/$name" ]] && continue
    case "$name" in
      cc | c++ | c89* | c99* | cpp* | gcc* | g++* | clang* | ld | ld.* | as | *-linux-gnu-* | \
        cmake | ccmake | ctest | cpack | ninja | make | gmake | tcc | icc | icx | nvcc) continue ;;
    esac
    ln -s "$exe" "$NOCC/$name"
  done
done
VENV="$WORK/venv"
rm -rf "$VENV" "$WORK/run"
python3 -m venv "$VENV"
export PATH="$VENV/bin:$NOCC"
for tool in cc gcc g++ c++ clang cmake ninja; do
  if command -v "$tool" > /dev/null; then
    echo "a compiler or build tool is still on PATH: $(command -v "$tool")" >&2
    exit 1
  fi
done
# pip's global configuration (/etc/xdg/pip: local wheel folders, the torch cap) applies here too
"$VENV/bin/python" -m pip install --quiet --upgrade pip
RUNDIR="$WORK/run" # no hevit source here: imports resolve to the installed wheel
mkdir -p "$RUNDIR"
cp README.md .ci/check_wheel.py "$RUNDIR/"

step "fresh venv: the repaired wheel with its core dependencies only (binary wheels only)"
time "$VENV/bin/python" -m pip install --only-binary=:all: "$WHEEL"
"$VENV/bin/python" -m pip list --format=freeze
du -sh "$VENV"

step "installed core: location, light imports, missing-extra errors, --version, licenses, README API example"
(
  cd "$RUNDIR"
  time python check_wheel.py --readme README.md --core-only \
    --expect-linkage "static, built from source: the sha256-pinned pyfhel-3.5.0 sdist"
  for module in hevit hevit.he; do
    python -X importtime -c "import $module" 2>&1 | grep -E "\| +$module\$" |
      awk -v m="$module" -F'|' '{printf "import time of %s (cumulative, this run): %.1f ms\n", m, $2 / 1000}'
  done
)

step "the extras [all,test] into the same venv, from the same wheel file"
time "$VENV/bin/python" -m pip install "${WHEEL}[all,test]"
"$VENV/bin/python" -m pip check
du -sh "$VENV"
(cd "$RUNDIR" && time python check_wheel.py --readme README.md)
