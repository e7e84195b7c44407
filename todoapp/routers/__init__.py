"""Thin HTTP mapping: parse, call a service, shape the answer."""
