"""Evaluation: bits-per-byte, zero/few-shot tasks (lm-eval conventions), the lm-eval adapter."""
