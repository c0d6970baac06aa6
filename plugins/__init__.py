"""Built-in stages. Each module is a pluggy plugin registered through the ``router`` entry point group,
exactly as a third-party plugin would be."""
