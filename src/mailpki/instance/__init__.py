"""An instance: its home folder, configuration, database, keys and CA, wired together."""
