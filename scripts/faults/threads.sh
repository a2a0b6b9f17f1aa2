# usage: threads.sh CODE OUT -- item 4: --threads 1 --stop-after 1, then --resume with the default threads
CODE=$1; W=$2; rm -rf $W; mkdir -p $W; cd $W; source /work/venv/bin/activate; export PYTHONPATH=$CODE; unset OMP_NUM_THREADS
T="--dataset digits --model-opt width=8 --model-opt hidden=16 --steps 2 --eval-samples 64 --eval-steps 2 --no-progress --epochs 3 --deterministic"
python -m fastmix train $T --threads 1 --out full > /dev/null 2>&1
python -m fastmix train $T --threads 1 --stop-after 1 --out cut > /dev/null 2>&1
python -m fastmix train $T --resume --out cut > /dev/null 2>&1
python - <<'PY'
import json, torch
strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "eval_seconds")} for r in rows]
a = strip(json.loads(l) for l in open("full/metrics.jsonl")); b = strip(json.loads(l) for l in open("cut/metrics.jsonl"))
print("threads in config.json:", json.load(open("cut/config.json")).get("threads"), "| torch default here:", torch.get_num_threads())
print("first differing epoch:", next((x["epoch"] for x, y in zip(a, b) if x != y), None), "| train_loss full", [r["train_loss"] for r in a], "resumed", [r["train_loss"] for r in b])
fa, fb = torch.load("full/last.pt", weights_only=True)["model"], torch.load("cut/last.pt", weights_only=True)["model"]
print("weights bit-identical:", all(torch.equal(fa[k], fb[k]) for k in fa))
PY
