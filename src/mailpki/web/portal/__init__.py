"""The enrollment portal: pages, sessions, theme."""
