"""What can be compressed: layer discovery, YAML search spaces, and trial -> plan decoding."""
