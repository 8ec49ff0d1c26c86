"""Hugging Face interop: export runs to transformers checkpoints, import Llama-family checkpoints.

hf_mapping.py is the one table of our parameter paths -> HF tensor names and layouts; export.py and
import_hf.py only walk it. docs/interop.md documents both directions.
"""
