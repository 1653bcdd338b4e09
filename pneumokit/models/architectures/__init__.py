"""Built-in architectures. Each module is a plugin, loaded through an entry point."""
