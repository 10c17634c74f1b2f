"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: steady timing on shared CPUs (OpenMP barriers stall when
    oversubscribed); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _private_face3dkit_cache(tmp_path_factory):
    """face3dkit's on-disk cache (decimated meshes, face3dkit.model.lod) in a folder of this test
    session, so the tests neither read nor write the user's ~/.cache."""
    import os

    old = os.environ.get("FACE3DKIT_CACHE_DIR")
    os.environ["FACE3DKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("face3dkit-cache"))
    yield
    if old is None:
        os.environ.pop("FACE3DKIT_CACHE_DIR", None)
    else:
        os.environ["FACE3DKIT_CACHE_DIR"] = old
