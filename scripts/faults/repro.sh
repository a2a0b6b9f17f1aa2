# usage: repro.sh CODE_DIR WORK_DIR   (prints each item's command, rc, and tail of output)
HERE="$(cd "$(dirname "$0")" && pwd)"
CODE=$1; W=$2; rm -rf $W; mkdir -p $W; cd $W
source /work/venv/bin/activate
export PYTHONPATH=$CODE OMP_NUM_THREADS=1
T="--dataset digits --model-opt width=8 --model-opt hidden=32 --steps 1 --eval-samples 32 --eval-steps 1 --no-progress"
fm() { echo "\$ fastmix $*"; timeout 300 python -m fastmix "$@" > out.txt 2>&1; rc=$?; tail -n 2 out.txt | cut -c1-220; echo "   -> rc=$rc"; }
python "$HERE/mkdata.py" $W
echo "### 1 existing run"; fm train $T --epochs 2 --out run; echo "   metrics rows: $(wc -l < run/metrics.jsonl)"
fm train $T --epochs 1 --out run; echo "   metrics rows after: $(wc -l < run/metrics.jsonl)"
echo "### 2 resume without checkpoint"; fm train $T --epochs 1 --resume --out nothere; ls nothere 2>&1 | tr '\n' ' '; echo
echo "### 4 resume with conflicting flag"; fm train $T --epochs 2 --stop-after 1 --out r4; fm train $T --epochs 2 --resume --eps 0.3 --method trades --out r4; echo "   config: $(python -c "import json;c=json.load(open('r4/config.json'));print({k:c.get(k) for k in ('eps','method','threads')})")"
echo "### 5 crafted cifar"; fm train --dataset cifar10 --data-dir cifar_evil --epochs 1 --out r5; echo "   PWNED exists: $(test -e PWNED && echo yes || echo no)"
echo "### 6 bench from cwd"; mkdir -p benchmarks; echo "print(\"ARBITRARY CODE RAN from ./benchmarks/run.py\")" > benchmarks/run.py; fm bench --help; grep -c ARBITRARY out.txt; rm -rf benchmarks
echo "### 7 label 200"; fm train $T --dataset mnist --data-dir mnist_bad --epochs 1 --out r7
echo "### 9 CLI paths"
fm train $T --epochs 1 --out r9a --model-opt foo=1
fm train $T --epochs 1 --out r9b --model-opt width=-1
fm train $T --epochs 1 --out r9c --device cuda
echo x > afile; fm train $T --epochs 1 --out afile
fm train $T --epochs 1 --out afile/sub
head -c 5000 run/last.pt > trunc.pt; fm eval --checkpoint trunc.pt --attacks clean
head -c 4000 /dev/urandom > rand.pt; fm eval --checkpoint rand.pt --attacks clean
: > empty.pt; fm eval --checkpoint empty.pt --attacks clean
fm eval --checkpoint run --attacks clean
python - <<'PY'
import torch
ck = torch.load("run/last.pt", weights_only=True)
ck["model_args"]["width"] = 16
torch.save(ck, "other.pt")
PY
fm eval --checkpoint other.pt --attacks clean
mkdir -p outdir; fm eval --checkpoint run/last.pt --attacks clean --out outdir
fm eval --checkpoint run/last.pt --attacks clean --out /dev/full
fm eval --checkpoint run/last.pt --attacks bogus
fm train $T --epochs 1 --out r9x --opt foo
fm train $T --epochs 1 --out r9y --threads 0
mkdir -p "$W.full"; if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=64k tmpfs "$W.full"; then fm train $T --epochs 1 --out "$W.full"/run; umount "$W.full"; fi
echo "### 9 SIGINT"; python "$HERE/sigint.py" $T --epochs 30 --out rint
echo "### 10 mi"; fm eval --checkpoint run/last.pt --attacks clean --mi ol --sanity --mi-n 2 --samples 20 --mi-pool 100; fm eval --checkpoint run/last.pt --attacks clean --mi ol --mi-eot -1 --mi-n 2 --samples 20 --mi-pool 100
echo "### 12 modes"; stat -c '%a %n' run/*
