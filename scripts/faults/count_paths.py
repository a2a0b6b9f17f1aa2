"""Run every CLI failure path of tests/test_faults.py::_paths against the fastmix on
PYTHONPATH (in-process) and count those that end in a traceback (an exception escaping
main) or not in 'fastmix <cmd>: error:' with exit code 2."""
import contextlib, io, os, pathlib, sys, tempfile, traceback
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
import torch
torch.set_num_threads(1)
import test_faults as T
from fastmix.cli import main
tmp = pathlib.Path(tempfile.mkdtemp())
assert main(["train", *T.TINY, "--epochs", "1", "--out", str(tmp / "run")]) == 0
paths = T._paths(tmp / "run", tmp)
tb = bad = 0
for name, argv, want in paths:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
        except BaseException as e:
            rc, kind = 1, type(e).__name__
            err.write(f"Traceback ... {kind}: {str(e).splitlines()[0][:120] if str(e) else ''}")
    e = err.getvalue().strip().splitlines()
    last = e[-1][:150] if e else ""
    is_tb = "Traceback" in err.getvalue()
    tb += is_tb
    ok = rc == 2 and err.getvalue().startswith(f"fastmix {argv[0]}: error: ")
    bad += not ok
    print(f"{'TRACEBACK' if is_tb else ('ok' if ok else 'WRONG'):9s} rc={rc} {name}: {last}")
print(f"\n{tb} of {len(paths)} listed CLI failure paths end in a traceback; {len(paths) - bad} end in 'fastmix <cmd>: error:' with rc 2")
