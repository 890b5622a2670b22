"""Latency of a durable offline check-in through the Python bindings (run by the
kepu-mobile-bench binary, which passes the server and the passes in the environment)."""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.environ["KEPU_BINDINGS"])
import kepu_mobile_ffi as k  # noqa: E402

client = k.KepuClient.open(os.environ["KEPU_DIR"], os.environ["KEPU_URL"], os.environ["KEPU_KEY"])
asyncio.run(client.enroll(os.environ["KEPU_CODE"]))
booking = os.environ["KEPU_BOOKING"]
client.add_document(booking)
asyncio.run(client.sync_now())
passes = open(os.environ["KEPU_PASSES"]).read().split("\n")
ms = []
for p in passes:
    t = time.perf_counter()
    client.scan_pupil_pass(booking, p)
    ms.append((time.perf_counter() - t) * 1000)
ms.sort()
print(f"python durable check-in: n={len(ms)} p50={ms[len(ms) // 2]:.2f} ms "
      f"p99={ms[min(len(ms) - 1, round((len(ms) - 1) * 0.99))]:.2f} ms", flush=True)
os._exit(0)
