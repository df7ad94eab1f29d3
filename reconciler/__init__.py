"""reconciler: declarative reconciler for real-time AI voice-agent sessions."""

__version__ = "0.1.0"
