"""Exceptions whose message is meant to be shown to a user as one line."""


class MusicidError(Exception):
    """Base class: the CLI prints `error: <message>` and exits non-zero, no traceback."""


class ConfigError(MusicidError):
    """A parameter is missing, unknown or out of range; the message names the key."""


class ArchiveError(MusicidError):
    """An archive is unreadable, incomplete or unsafe; the message names the member."""


class LeakageError(MusicidError):
    """A track, work or identical audio appears in more than one split."""


class NotReadyError(MusicidError):
    """A data source does not have enough usable audio for the requested task."""
