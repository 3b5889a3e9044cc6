"""Positions as pure data: file formats, validation and the reference-book generator."""
