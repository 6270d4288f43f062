"""What a person reads: the terminal table of the front and the HTML report."""
