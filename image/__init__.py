"""The node image recipe and builder."""
