"""The application layer: one plain function per command, over resolved settings."""
