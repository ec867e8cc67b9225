"""Online experiments: definitions and assignment, the in-process book, the statistics."""
