"""Thin command line layer over the instance operations."""
