"""distilvit: small, fast, deployable image captioners.

image -> frozen vision encoder -> trainable projection -> decoder-only LM + LoRA -> text
"""

__version__ = "0.1.0"
