"""The four Quanyu services; each talks to the others only through protos/ over gRPC."""
