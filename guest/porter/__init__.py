"""Examples for arch porters: their own page-table policies, plugged in by scenario."""
