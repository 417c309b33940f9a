"""edge-agent: the classroom edge runtime for Jetson Orin class boards."""

__version__ = "0.1.0"
