"""tunewise: post-training for Hugging Face causal LMs (SFT with LoRA or full parameters, DPO, eval, serve)."""

__version__ = "0.1.0"
