"""Built-in augmentations. Each module is a plugin, loaded through an entry point."""
