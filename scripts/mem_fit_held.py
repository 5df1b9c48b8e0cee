"""Peak RSS that wide.fit adds per active row (issue 15 item 6), after a warm-up run of the same length.

  flock /work/bench.lock python scripts/mem_fit_held.py active sgd 22     # method, optimizer, log2(m)

Prints one JSON line (n = 8, d = 64, 20 steps; Linux /proc/self/status VmHWM reset via clear_refs).
"""
import json
import sys
import time

import jax

from jaxcorr import data, optimizers, wide


def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

method, opt = sys.argv[1], sys.argv[2]
m, n, d = 2**int(sys.argv[3]) if len(sys.argv) > 3 else 2**22, 8, 64
X, y = data.synthetic(0, n, d)
model, _ = wide.setup(jax.random.key(0), m, d, X)
jax.block_until_ready(model.W)
optimizer = optimizers.make(opt)  # the shared table: sgd -> train.sgd(1.0), adam -> optax.adam(0.01)
# warm the compiled programs with a 1-step run, so the peak is the data's, not the compiler's
wide.fit(model, X, y, steps=20, method=method, optimizer=optimizer)
wide.release_host_memory()
base = rss("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM
t = time.perf_counter()
m2, h = wide.fit(model, X, y, steps=20, method=method, optimizer=optimizer)
jax.block_until_ready(m2.W)
peak = rss("VmHWM")
k = model.n_active
print(json.dumps({"method": method, "optimizer": opt, "m": m, "n_active": k, "rss_before_MiB": base / 2**20,
                  "peak_MiB": peak / 2**20, "added_per_active_row_B": (peak - base) / k,
                  "rows_bytes_per_row": d * 4, "fit_s": time.perf_counter() - t}))
