"""The long-running daemon's parts: triggers, snapshots, callbacks, metrics, logs, HTTP, lease."""
