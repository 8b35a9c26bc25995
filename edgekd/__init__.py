"""edgekd: distill CLIP-style teachers into compact open-vocabulary students, export, benchmark and run them.

Importing this package is cheap on purpose: it pulls in neither torch nor any optional backend, so the
on-device runtime (``edgekd.runtime``) can live on machines without them.
"""

__version__ = "0.1.0"


class EdgekdError(Exception):
    """An error the user can fix; its message says what went wrong and what to do. The CLI prints it in one line."""
