"""Leaves every layer may import: settings, errors, tokens, process handles. Imports nothing above."""
