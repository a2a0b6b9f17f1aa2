"""Fixtures for the before/after reproductions: a tiny MNIST dir with a label 200, and a
crafted CIFAR-10 dir whose data_batch_1 creates a file when unpickled."""
import gzip, os, pickle, struct, sys
import numpy as np
root = sys.argv[1]
m = os.path.join(root, "mnist_bad"); os.makedirs(m, exist_ok=True)
rng = np.random.default_rng(0)
n = 300
def idx(path, arr):
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.astype(np.uint8).tobytes())
for pre, k in (("train", n), ("t10k", 100)):
    idx(os.path.join(m, f"{pre}-images-idx3-ubyte"), rng.integers(0, 256, (k, 28, 28)))
    lab = rng.integers(0, 10, k); lab[7] = 200
    idx(os.path.join(m, f"{pre}-labels-idx1-ubyte"), lab)
c = os.path.join(root, "cifar_evil", "cifar-10-batches-py"); os.makedirs(c, exist_ok=True)
marker = os.path.join(root, "PWNED")
class Evil:
    def __reduce__(self):
        return (open, (marker, "w"))
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    with open(os.path.join(c, name), "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
