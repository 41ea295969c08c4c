"""Drawing, kept apart from the data it draws (library code never imports from here)."""
