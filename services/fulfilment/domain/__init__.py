"""Fulfilment's rules, free of gRPC and the database."""
