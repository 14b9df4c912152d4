"""rwabot: dynamic risk parity for real-world assets."""

__version__ = "0.1.0"
