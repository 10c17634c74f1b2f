"""Data-parallel plumbing of ``fer train``: face3dkit's (:mod:`face3dkit.distributed`), re-exported."""

from face3dkit.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    average_gradients,
    barrier,
    broadcast_buffers,
    broadcast_module,
    cleanup,
    setup,
)

__all__ = ["DistInfo", "setup", "cleanup", "average_gradients", "broadcast_module", "broadcast_buffers",
           "all_gather_objects", "all_reduce_sum", "barrier"]
