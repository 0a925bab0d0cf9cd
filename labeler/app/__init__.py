"""The labeling window's application layer: session state, undo commands, key table, loader, settings."""
