"""Run every benchmark in this folder, one after the other (``make bench``)."""
import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
for script in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
    print(f"== {os.path.basename(script)}", flush=True)
    subprocess.run([sys.executable, script], check=True)
