"""Pickle payloads for the checkpoint-safety tests.

``CheckpointBox`` is benign: a dict subclass, so unpickling it needs this module (weights_only refuses it)
but running it does nothing. ``RunsShellOnLoad`` is hostile: unpickling it CALLS os.system. Tests only
ever torch.save it (pickling calls __reduce__, which merely returns the tuple) and check that fadiag
refuses to load it; no test may load it with --trust-checkpoint.
"""

from __future__ import annotations

import os


class CheckpointBox(dict):
    """A custom container holding {"model": state_dict, ...}, as some training frameworks save."""


class RunsShellOnLoad:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))
