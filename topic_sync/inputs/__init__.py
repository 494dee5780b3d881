"""What topic-sync reads from people and pipelines: the audience, the message, the config file."""
