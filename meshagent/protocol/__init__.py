"""Pure protocol logic: no I/O, no clock, no randomness.

Time and randomness come in as arguments; functions return the messages to
send. The trio shell in :mod:`meshagent.net` and :mod:`meshagent.node`, and the
simulations in ``simulations/``, drive this code unchanged.
"""
