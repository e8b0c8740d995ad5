"""LustraX Stream: the composition root (settings, CLI, local stack supervisor)."""
