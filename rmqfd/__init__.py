"""Helpers shared by vrrpd and tcplb (kept import-cheap: nothing is imported here)."""
