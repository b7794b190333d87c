"""One resource module per noun."""
