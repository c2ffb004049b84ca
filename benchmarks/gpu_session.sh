#!/usr/bin/env bash
# What a lent GPU is for (issue 13), as one command: the CUDA tests, then the GPU records, most
# important first, each under its own time limit so that a slow step cannot take the others'
# time. The limits add up to 9 minutes 10 s, the whole run to under 10 minutes (the device
# tool's limit for one command): give the device call timeout_s=600. The last step, the
# sparse section in bfloat16, is the one a slow start would cut.
#
# Run from the repository root on the GPU machine (nothing to install: torch is there and
# torchwire runs from src/):
#     OUT=/some/folder bash benchmarks/gpu_session.sh
# Everything lands in $OUT as two files (the device tool brings back at most 8): session.log,
# the steps' output, and records.tar.gz, the results written so far, packed again after each
# step. Unpack the records into benchmarks/results/ and quote them with the device named.
set -u
OUT=${OUT:-/tmp/torchwire-gpu-session}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/session.log"
PY=${PYTHON:-python3}

NAME=$($PY -c "
import torch
name = torch.cuda.get_device_name().lower()
print('cuda-' + next((k for k in ('h200', 'h100', 'a100', 'l4') if k in name), 'gpu'))
")

step() {  # step SECONDS COMMAND...: run it under a time limit, its output into the log
    local limit=$1
    shift
    echo "== $(date +%T) $* (limit ${limit} s)" >>"$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    echo "== $(date +%T) exit $?" >>"$LOG"
    tar czf "$OUT/records.tar.gz" -C "$WORK" .
}

bench() {  # bench SECONDS SECTION DTYPE [OPTIONS...]
    local limit=$1 section=$2 dtype=$3
    shift 3
    local file="$WORK/$NAME-$dtype-$section"
    step "$limit" "$PY" -m torchwire bench --device cuda --full --section "$section" \
        --dtype "$dtype" --json "$file.json" --markdown "$file.md" "$@"
}

{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__)"; } >>"$LOG" 2>&1

# The CUDA tests: every module on CUDA against the CPU, and CUDA graph capture under
# torch.cuda.set_sync_debug_mode("error") (tests/test_cuda_graphs.py).
step 140 "$PY" -m pytest -q -p no:randomly tests/test_cuda_graphs.py \
    tests/test_module_contract.py -k "cuda or capture or cuda_graphs"
# SparseLinear on a GPU, for the first time; then the block grid in both dtypes.
bench 120 sparse float32 --repeats 5
bench 60 block float32
bench 60 block bfloat16
bench 30 overhead float32
# Compiled against eager with CUDA graphs (torch.compile's reduce-overhead mode); each row is
# written as it is measured.
step 90 "$PY" benchmarks/compile_vs_eager.py --device cuda --mode reduce-overhead --rounds 7 \
    --markdown "$WORK/$NAME-float32-compile.md"
bench 50 sparse bfloat16 --repeats 3
rm -rf "$WORK"
