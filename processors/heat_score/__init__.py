"""Rolling heat scores over views, likes and watch ticks."""
