"""Cloud-side allocation: who senses what (papers 001, 002, 004), as pure functions."""
