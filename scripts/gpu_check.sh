#!/usr/bin/env bash
# Everything that needs a GPU, in one call (< 8 minutes on one GPU), with a report:
#   bash scripts/gpu_check.sh OUTDIR        # -> OUTDIR/report.md, OUTDIR/report.json
# 1. CUDA kernels (ps_roi_pool, ps_roi_align, deform_ps_roi_pool) vs the CPU kernels, forward
#    and backward, fp32/fp64, fp16/bf16 through autocast (scripts/gpu_check_kernels.py)
# 2. scripts/bench_psroi.py --cuda (ours vs torchvision's CUDA ops)
# 3. scripts/bench_detector.py --device cuda (R-FCN vs torchvision Faster R-CNN)
# 4. 200 iterations of AMP (fp16) training of the default model on the synthetic data, with
#    its evaluation (tools/train.py)
# It installs nothing (run it after README's test command) and stops at once, with a clear
# message, on a machine without CUDA. Each step has its own time limit; a failing step is
# reported and the others still run.
set -uo pipefail
out=${1:?usage: bash scripts/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA device here (torch.cuda.is_available() is False); gpu_check needs one" >&2
  exit 2
fi
export RFCN_CACHE_DIR="$out/cache"
status=()
step() {  # step NAME SECONDS command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  status+=("$name $rc $((SECONDS - t0))")
  echo "   rc=$rc in $((SECONDS - t0))s (log: $out/$name.log)"
}
step kernels 150 python scripts/gpu_check_kernels.py --out "$out/kernels.json"
step bench_psroi 120 python scripts/bench_psroi.py --cuda --repeat 20 --warmup 3
step bench_detector 150 python scripts/bench_detector.py --device cuda --runs 10 --warmup 3 --no-train
step train_amp 240 python tools/train.py train.device=cuda train.amp=fp16 train.max_iter=200 \
  train.checkpoint_period=200 train.progress=false "hydra.run.dir=$out/train"
python - "$out" "${status[@]}" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
steps = [dict(zip(("name", "rc", "seconds"), s.split())) for s in sys.argv[2:]]
report = {"steps": steps}
kernels = out / "kernels.json"
if kernels.is_file():
    report["kernels"] = json.loads(kernels.read_text())
metrics = out / "train" / "metrics.json"
if metrics.is_file():
    report["train_amp_200_its"] = json.loads(metrics.read_text())
(out / "report.json").write_text(json.dumps(report, indent=2))
lines = ["# GPU check", ""]
if "kernels" in report:
    lines.append(f"Device: {report['kernels']['device']}, torch {report['kernels']['torch']}")
lines += ["", "| step | exit | seconds |", "|---|---|---|"]
lines += [f"| {s['name']} | {s['rc']} | {s['seconds']} |" for s in steps]
if "kernels" in report:
    lines += ["", "## Kernels (CUDA vs CPU, max abs difference)", "",
              "| op | dtype | forward | grad input | grad offsets | ok |", "|---|---|---|---|---|---|"]
    for r in report["kernels"]["checks"]:
        lines.append(f"| {r['op']} | {r['dtype']} | {r['forward_max_diff']:.2e} | "
                     f"{r.get('grad_input_max_diff', float('nan')):.2e} | "
                     f"{r.get('grad_offsets_max_diff', float('nan')):.2e} | {r['ok']} |")
for name in ("bench_psroi", "bench_detector"):
    log = out / f"{name}.log"
    if log.is_file():
        lines += ["", f"## {name}", "", log.read_text()[-6000:]]
if "train_amp_200_its" in report:
    m = report["train_amp_200_its"]
    lines += ["", "## 200-iteration AMP training (synthetic)", "",
              f"AP {m.get('AP')}, AP50 {m.get('AP50')}, AP75 {m.get('AP75')}"]
(out / "report.md").write_text("\n".join(lines) + "\n")
print(f"report: {out / 'report.md'}")
failed = [s for s in steps if s["rc"] != "0"]
sys.exit(1 if failed else 0)
PY
