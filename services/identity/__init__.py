"""Identity: one customer across every channel (OneID), and the tokens callers present."""
