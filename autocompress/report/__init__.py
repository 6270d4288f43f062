"""What a person reads: the terminal table of the front (and, later, the HTML report)."""
