"""Marketing: campaigns that act on what the platform knows, measured against a holdout group."""
