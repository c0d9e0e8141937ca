"""Fulfilment: stores, zones, opening hours, stock, and the nearest store that can serve an order."""
