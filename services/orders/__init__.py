"""Orders: every channel's and every till's orders, their state machine, store queues, reports."""
