"""Runs every test_*.py here against the generated bindings and prints `N passed, M failed`.

Environment: KEPU_BINDINGS (directory with kepu_mobile_ffi.py and the library),
KEPU_TEST_SERVER (the in-process test server binary), KEPU_SERVER (the real
`kepu-server` binary; the tests seed it with its admin CLI and start it).
"""

import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ["KEPU_BINDINGS"])
sys.path.insert(0, here)

suite = unittest.defaultTestLoader.discover(here, pattern="test_*.py")
result = unittest.TextTestRunner(verbosity=2).run(suite)
failed = len(result.failures) + len(result.errors)
print(f"{result.testsRun - failed} passed, {failed} failed", flush=True)
sys.stdout.flush()
sys.stderr.flush()
# Exit without interpreter finalization: a uniffi async continuation arriving during
# finalization can abort CPython (< 3.14).
os._exit(0 if result.wasSuccessful() else 1)
