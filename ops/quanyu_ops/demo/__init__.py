"""`quanyu demo`: a realistic chain loaded into a running platform and the main flows played on it.

`chain` holds the data (districts, stores, catalogue, stock), made the same on every run from a
fixed seed; `play` starts the platform when it is not running, loads the chain and plays the
flows, saying in plain words what happened.
"""
