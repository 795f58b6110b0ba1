"""The words every package shares: errors (one sentence each), progress events, the stage table, a run's status,
the cache folder, how a user writes a value (parsing), the figures' palette and a method's look.

Imports nothing of the project and no torch: the app's server, the figures and the engine all read it.
"""
