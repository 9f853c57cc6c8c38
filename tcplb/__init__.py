"""tcplb."""
