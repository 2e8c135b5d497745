"""The vocabulary every layer shares: the parsed inventory model (frozen dataclasses), typed
errors, secrets, progress events. Imports nothing else from provision."""
