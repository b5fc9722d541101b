import os

import pytest
import torch

# Tests are small; one intra-op thread keeps timings stable on a 2-core CI and avoids oversubscription
# when pytest-xdist or Snakemake run several processes.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
