"""The relay's version, kept in this one place."""

VERSION = "1.0.0"
