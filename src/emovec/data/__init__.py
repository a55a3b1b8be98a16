"""Data files shipped with emovec (see DATA.md)."""
