"""Optional integrations with frameworks; the core never imports them."""
