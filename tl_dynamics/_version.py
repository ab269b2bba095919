"""Version of the tl-dynamics package."""

__version__ = "0.1.0"
