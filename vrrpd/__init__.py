"""vrrpd."""
