"""The HTTP side: authentication, the /status blueprint, health endpoints and JSON errors."""
