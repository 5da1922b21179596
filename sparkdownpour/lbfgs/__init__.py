"""Sandblaster L-BFGS: the driver-side coordinator and the executors' loss/gradient stage."""
