"""The built-in plugins: the stages (coerce, forward, resend, transcode), the default access policy (access) and
the built-in destination types (destinations).

Each module is an ordinary pluggy plugin. ``router.hooks.manager.DEFAULT_PLUGINS`` registers them from inside the
installed package, before the third-party plugins of the ``router`` entry point group."""
