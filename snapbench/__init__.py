"""snapbench: take a Stable-Diffusion-style UNet apart for the iPhone.

Pipeline: model -> blocks -> converters -> profilers -> latency table -> evolution -> reports.
"""

__version__ = "0.1.0"
