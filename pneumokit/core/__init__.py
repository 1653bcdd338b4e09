"""The ground floor: settings and defaults (``config``), safe file writes (``files``), the plugin
core (``plugins``: entry points, ``catalog``: the records plugins register), the backend check and
progress bars. Imports nothing above it."""
