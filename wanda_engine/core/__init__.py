"""The words every package shares: errors (one sentence each), progress events, the stage table, the cache folder,
the figures' palette and a method's look.

Imports nothing of the project and no torch: the app's server, the figures and the engine all read it.
"""
