"""crossmodal: cross-modal generative pathology pipeline library."""
__version__ = "0.1.0"
