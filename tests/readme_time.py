"""Time every README step as written, in order, in one empty folder (issue 22), each as its own process.

Usage: python tests/readme_time.py CLONE WORKDIR OUT.jsonl  (CLONE: a checkout whose README and src are timed;
run it twice, in two fresh WORKDIRs, for first-run and warm-cache times).  Not a test: it builds the full corpora
and takes about an hour cold on 2 cores.  Servers are timed until GET /health answers; the bootstrap, hub and
cluster lines are not run (NOT_RUN)."""
import json, os, subprocess, sys, time, urllib.request, re
clone, work, out = sys.argv[1:4]
sys.path.insert(0, os.path.join(clone, "tests"))
from readme_steps import readme_steps
from pathlib import Path
os.makedirs(work, exist_ok=True)
env = {"HOME": os.environ["HOME"], "PATH": os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin",
       "PYTHONPATH": os.path.join(clone, "src"), "LANG": "C.UTF-8"}
NOT_RUN = {"make test": "the test suite (CI)", "anybind encode data/tux/manifest.jsonl -e image:efficientnet-lite0 --ray-address": "needs a Ray cluster",
           "RAY_ADDRESS=auto": "needs a cluster and the reader's data/big.jsonl",
           "anybind fit --from-pretrained clip=openai/": "downloads from the Hugging Face hub (no network here)",
           "anybind bind spaces/clip ": "needs spaces/clip from the hub line"}
def log(rec):
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(rec, flush=True)
for step in readme_steps(Path(clone) / "README.md"):
    rec = {"line": step.line, "kind": step.kind, "text": step.text[:200]}
    if step.skipped:
        rec["skipped"] = step.skipped; log(rec); continue
    why = next((w for s, w in NOT_RUN.items() if (step.text + " ").startswith(s)), None)
    if why:
        rec["skipped"] = why; log(rec); continue
    t0 = time.perf_counter()
    if step.kind == "python":
        p = subprocess.run([sys.executable, "-c", step.text], cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        rc, err = p.returncode, p.stderr
    elif step.text.startswith("make demo"):
        p = subprocess.run(["bash", "-c", "anybind demo --work demo-out"], cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        rc, err = p.returncode, p.stderr
    elif step.text.startswith("anybind serve"):
        m = re.search(r"--port (\d+)", step.text); port = int(m.group(1)) if m else 8000
        p = subprocess.Popen(["bash", "-c", step.text], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rc = None
        while time.perf_counter() - t0 < 600:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read(); rc = "ready"; break
            except Exception:
                if p.poll() is not None: rc = p.returncode; break
                time.sleep(0.2)
        rec["until"] = "GET /health answers"
        wall = time.perf_counter() - t0
        p.terminate()
        try: _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired: p.kill(); _, err = p.communicate()
        rec.update(wall=round(wall, 1), rc=rc, err_tail=err.strip().splitlines()[-3:] if rc != "ready" else [])
        log(rec); continue
    else:
        p = subprocess.run(["bash", "-c", step.text], cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        rc, err = p.returncode, p.stderr
    rec.update(wall=round(time.perf_counter() - t0, 1), rc=rc, err_lines=len(err.strip().splitlines()),
               err_tail=err.strip().splitlines()[-3:])
    log(rec)
