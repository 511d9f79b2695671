"""Paper-faithful training of the RATING ensemble (torch)."""
