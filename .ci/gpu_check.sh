#!/usr/bin/env bash
# The GPU check (issue: throughput), for a machine with CUDA: every family's rules run with
# --device cuda, and the bench keys report absolute epoch times on the GPU.  Not part of CI
# (no GPU there) and not a dependency of any test.  Usage, from the project root:
#   bash .ci/gpu_check.sh [OUT]     # OUT: a folder for the runs (default: a temporary one)
# Prints one line per check and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" \
    || { echo "gpu_check: no CUDA device visible to torch; nothing to check"; exit 3; }
python3 -c "import torch; print('gpu_check: torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
rc=0
check() {  # check NAME COMMAND...: run it, print its wall time and its last line
    local name="$1"; shift
    local t0=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then
        echo "ok   $name ($((SECONDS - t0)) s): $(tail -1 "$out/$name.log")"
    else
        rc=1
        echo "FAIL $name ($((SECONDS - t0)) s):"; tail -5 "$out/$name.log"
    fi
}
# one short run per family, on the GPU (quick budgets)
check layered   bioprop compare --task fashion-mnist --rules bp,fa,dfa,sign-symmetry,kp,dni,cdni,vfbn --quick --device cuda --out "$out/layered"
check settling  bioprop compare --task fashion-mnist --rules ep --quick --device cuda --out "$out/settling"
check tp        bioprop compare --task fashion-mnist --rules tp,dtp,dtp-drl,ddtp-linear --quick --device cuda --out "$out/tp"
check recurrent bioprop compare --task copy --rules bptt,dni,dni-aux --quick --device cuda --out "$out/recurrent"
check plastic   bioprop compare --task pattern-memorisation --quick --device cuda --out "$out/plastic"
check kickback  bioprop compare --task arm --rules bp,kickback --quick --device cuda --out "$out/kickback"
check sweep     bioprop sweep --task linear --rules fa --seeds 2 --grid optimizer.lr=0.005,0.01 --quick --device cuda --out "$out/sweep"
# absolute epoch times on the GPU (cand/base columns, seconds)
check bench     bioprop bench --device cuda --repeats 3 --only fa_over_bp_b32,fa_over_bp_b128,handloop_over_bp_b32,handloop_over_bp_b128,fa_over_handloop,recording_overhead,recording_bytes_floor,epoch_over_handloop_fmnist,gflops_fraction,gflops_fraction_b128,ep_over_bp_epoch,dtp_over_bp_epoch,kickback_over_bp_epoch,rnn_bptt_over_torch_lstm,dni_over_bptt_update
cat "$out/bench.log"
echo "gpu_check: spiking circuits run on brian2 (CPU); not checked here. Logs in $out"
exit $rc
