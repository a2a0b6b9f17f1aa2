import os, signal, subprocess, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
p = subprocess.Popen([sys.executable, "-m", "fastmix", "train", *sys.argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
while not os.path.exists(os.path.join(out, "last.pt")) and p.poll() is None:
    time.sleep(0.05)
p.send_signal(signal.SIGINT)
o = p.communicate(timeout=120)[0].decode()
print("\n".join("   " + l[:200] for l in o.strip().splitlines()[-4:]))
print(f"   -> rc={p.returncode}")
