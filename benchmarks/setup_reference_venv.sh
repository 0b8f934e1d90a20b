#!/usr/bin/env bash
# Build the two venvs of the side-by-side benchmark (idempotent: a venv that already imports what it
# needs is left alone).
#
#   .ref-venv    the reference DALLE2-pytorch 1.15.6 on torch 2.14.1 (+ torchvision, which it needs)
#   .bench-venv  this repository (editable) on the SAME torch 2.14.1, so both sides run one torch build
#
# The reference is never a dependency of this project: it lives only in .ref-venv, which is git-ignored.
# Usage: benchmarks/setup_reference_venv.sh [--reference-only | --ours-only]
# Environment: PYTHON (interpreter to create the venvs with, default python3).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
REFERENCE_VERSION="1.15.6"
REF_VENV="$REPO_ROOT/.ref-venv"
BENCH_VENV="$REPO_ROOT/.bench-venv"

make_venv() {  # make_venv DIR: create DIR as a venv unless it already has an interpreter
    if [ ! -x "$1/bin/python" ]; then
        "$PYTHON" -m venv "$1"
    fi
}

has_torch() {  # has_torch DIR: true when DIR's torch is exactly $TORCH_VERSION (any local build tag)
    "$1/bin/python" - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
}

setup_reference() {
    make_venv "$REF_VENV"
    if ! has_torch "$REF_VENV"; then
        "$REF_VENV/bin/pip" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
    fi
    # run from / so that this checkout's dalle2_pytorch cannot shadow the installed reference
    if ! (cd / && "$REF_VENV/bin/python" -c "from dalle2_pytorch.version import __version__ as v; assert v == '$REFERENCE_VERSION'" 2>/dev/null); then
        "$REF_VENV/bin/pip" install "dalle2-pytorch==$REFERENCE_VERSION" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
    fi
    echo "reference venv ready: $REF_VENV"
}

setup_ours() {
    make_venv "$BENCH_VENV"
    if ! has_torch "$BENCH_VENV"; then
        "$BENCH_VENV/bin/pip" install "torch==$TORCH_VERSION"
    fi
    if ! (cd / && "$BENCH_VENV/bin/python" -c "import dalle2_pytorch, os, sys; sys.exit(0 if os.path.dirname(os.path.dirname(os.path.abspath(dalle2_pytorch.__file__))) == '$REPO_ROOT' else 1)" 2>/dev/null); then
        # pinning torch keeps pip from swapping the build the reference uses
        "$BENCH_VENV/bin/pip" install -e "$REPO_ROOT" "torch==$TORCH_VERSION"
    fi
    # Mirror the project's .venv (extras other parts of the package import, e.g. vector-quantize-pytorch),
    # except its torch build: the twin keeps the reference's torch.
    if [ -x "$REPO_ROOT/.venv/bin/pip" ]; then
        local requirements="$BENCH_VENV/project-requirements.txt"
        "$REPO_ROOT/.venv/bin/pip" freeze --exclude-editable 2>/dev/null \
            | grep -v -i -E '^(torch|torchvision|triton|nvidia-|cuda-)' | grep -v '^#' > "$requirements"
        "$BENCH_VENV/bin/pip" install -q -r "$requirements" "torch==$TORCH_VERSION"
    fi
    echo "our twin venv ready: $BENCH_VENV"
}

case "${1:-}" in
    --reference-only) setup_reference ;;
    --ours-only) setup_ours ;;
    "") setup_reference; setup_ours ;;
    *) echo "usage: $0 [--reference-only | --ours-only]" >&2; exit 2 ;;
esac
