import os

# LightGBM's OpenMP threads spin while they wait; on a shared or busy machine that stalls every
# tree (measured: a tuning trial 6.5 min spinning vs about 20 s passive). Must precede its import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
