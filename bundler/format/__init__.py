"""The bundle format: layout, manifest, chunks, signatures, trust rules, state.

Nothing here knows about content kinds, the network or the terminal.
"""
