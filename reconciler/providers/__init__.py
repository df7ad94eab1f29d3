"""Cloud provider clients: request signing and the wire calls of each provider API."""
