"""The reading side: rank finished cells, compare them, draw and report. Imports core and metric declarations."""
