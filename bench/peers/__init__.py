"""Equivalent servers built on the alternatives liveboard is compared with."""
