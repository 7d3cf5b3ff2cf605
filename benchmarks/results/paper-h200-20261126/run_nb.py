"""Execute a notebook's code cells in one namespace with overridden parameters (no Jupyter needed)."""
import json
import sys
import time

import matplotlib

matplotlib.use("Agg")
nb_path = sys.argv[1]
params = json.loads(sys.argv[2])
nb = json.load(open(nb_path))
ns = {}
t0 = time.time()
for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] != "code":
        continue
    src = "".join(cell["source"])
    if "injected-parameters" in cell["metadata"].get("tags", []):
        continue  # papermill's record of an earlier run's parameters
    t = time.time()
    exec(compile(src, f"cell{i}", "exec"), ns)
    if "parameters" in cell["metadata"].get("tags", []):
        ns.update(params)
    print(f"[cell {i}] {time.time() - t:.1f} s", flush=True)
print(f"NOTEBOOK WALL {time.time() - t0:.1f} s", flush=True)
