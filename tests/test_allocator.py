"""Freed arrays are reused, not refaulted, once a program calls keep_freed_memory(): the page
faults of repeated training steps with and without the call (TINYGRAD_BN_MALLOC=default)."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource
    import numpy as np
    from tinygrad_bn import Tensor, nn, optim
    from tinygrad_bn.allocator import keep_freed_memory
    import tinygrad_bn.nn.functional as F
    keep_freed_memory()  # the explicit call a training program makes (a no-op when opted out)
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(),
                          nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 10))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = np.random.rand(256, 256).astype(np.float32), np.random.randint(0, 10, 256)
    def step():
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


def _faults_per_step(malloc_setting):
    env = dict(os.environ, TINYGRAD_BN_MALLOC=malloc_setting, OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_training_steps_reuse_freed_memory():
    from tinygrad_bn.allocator import keep_freed_memory
    if not keep_freed_memory():
        pytest.skip("this libc has no mallopt")
    # Page faults are the kernel's count, not ours: on a machine loaded by other processes the
    # same program has been seen to fault ~600 times a step with and without the tuning. Three
    # tries, the best of each setting, and a skip on a machine busier than its cores.
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        pytest.skip(f"machine loaded (load average {os.getloadavg()[0]:.1f}): fault counts "
                    f"of other processes' making")
    tuned = min(_faults_per_step("keep") for _ in range(3))
    untuned = max(_faults_per_step("default") for _ in range(3))
    if untuned < 500:  # measured ~1,700 per step with glibc 2.36's defaults
        pytest.skip(f"this malloc does not refault freed blocks ({untuned:.0f} faults/step)")
    assert tuned < untuned / 5, (tuned, untuned)
