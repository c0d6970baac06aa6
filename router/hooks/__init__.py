"""Plugin hooks: ``specs`` (every hook, a documented stub), ``answers`` (what decision hooks return), ``calls``
(``notify`` / ``decide``: each implementation called on its own) and ``manager`` (the per-process plugin manager:
built-in, installed and configured plugins, their settings)."""
