"""Before paying for a slice: analytic memory/throughput plans and ahead-of-time TPU compiles."""
