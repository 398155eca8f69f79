import contextlib
import ctypes
import os

# LightGBM's OpenMP threads spin while they wait; on a shared or busy machine that stalls every
# tree (measured: a tuning trial 6.5 min spinning vs about 20 s passive). OpenMP reads the variable
# when LightGBM's library loads, so it is set here, by the package that imports LightGBM, for every
# process that trains or scores (and the processes they start); the one place it is set. A module
# that imports lightgbm before anything from models/ gets OpenMP's default.
OMP_WAIT_POLICY = os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what is in force, for reports


def release_freed_memory() -> None:
    """Give back to the system the heap memory a process freed: glibc keeps it otherwise, and a
    service that loaded a model stays that much larger (measured: 16 MiB a process after building
    the contributions' table, 45 MiB in `bentoml serve`'s own process after its start-up check).
    Elsewhere than glibc this does nothing."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)
